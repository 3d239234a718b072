// A fixed-bucket latency histogram in the spirit of HdrHistogram: values in
// microseconds, exact below 128 µs, then 64 sub-buckets per power of two
// (worst-case error about 1.6%). Mergeable across processes as sparse counts.

const LINEAR = 128;
const SUB_BUCKETS = 64;
const MAX_SHIFT = 30; // up to ~2^37 µs, far beyond any deadline

function indexOf(us: number): number {
  const v = Math.max(0, Math.floor(us));
  if (v < LINEAR) return v;
  const shift = 31 - Math.clz32(v) - 6; // v >> shift lies in [64, 127]
  return LINEAR + (Math.min(shift, MAX_SHIFT) - 1) * SUB_BUCKETS + ((v >>> shift) - SUB_BUCKETS);
}

/** Midpoint of a bucket, in µs. */
function valueOf(index: number): number {
  if (index < LINEAR) return index;
  const shift = Math.floor((index - LINEAR) / SUB_BUCKETS) + 1;
  const sub = ((index - LINEAR) % SUB_BUCKETS) + SUB_BUCKETS;
  return sub * 2 ** shift + (2 ** shift - 1) / 2;
}

export type SparseCounts = Array<[index: number, count: number]>;

export class Histogram {
  private readonly counts = new Float64Array(LINEAR + MAX_SHIFT * SUB_BUCKETS);
  total = 0;
  max = 0;
  private sum = 0;

  record(us: number): void {
    this.counts[indexOf(us)]++;
    this.total++;
    this.sum += us;
    if (us > this.max) this.max = us;
  }

  /** The value below which a fraction q (0..1) of recorded values lie, in µs. */
  percentile(q: number): number {
    if (this.total === 0) return NaN;
    const rank = Math.max(1, Math.ceil(q * this.total));
    let seen = 0;
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i];
      if (seen >= rank) return Math.min(valueOf(i), this.max);
    }
    return this.max;
  }

  get mean(): number {
    return this.total === 0 ? NaN : this.sum / this.total;
  }

  toJSON(): { counts: SparseCounts; total: number; max: number; sum: number } {
    const counts: SparseCounts = [];
    this.counts.forEach((c, i) => {
      if (c > 0) counts.push([i, c]);
    });
    return { counts, total: this.total, max: this.max, sum: this.sum };
  }

  static from(json: { counts: SparseCounts; max: number; sum: number }): Histogram {
    const h = new Histogram();
    h.add(json);
    return h;
  }

  add(json: { counts: SparseCounts; max: number; sum: number }): void {
    for (const [i, c] of json.counts) {
      this.counts[i] += c;
      this.total += c;
    }
    this.sum += json.sum;
    if (json.max > this.max) this.max = json.max;
  }
}
