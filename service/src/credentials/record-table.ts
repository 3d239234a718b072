/**
 * Storage for the ResolveKey cache outside the JavaScript heap: records of
 * bytes in 1 MiB buffers, found through an open-addressing hash table, with
 * per-record links (LRU, organisation lists) in typed arrays. A cached entry is
 * no object at all for the garbage collector: 100,000 entries used to be ~45 MB
 * of objects that every full collection marked and that counted towards the
 * old generation's growth limit (docs/adr/0002-off-heap-cache.md); here they are ~30 MB of
 * buffer memory that no collection visits.
 *
 * A record is found by its kind and key (a string). Its bytes start with the
 * key, written by writeText; what follows is the caller's. Slots are small
 * integers, reused once freed; every per-slot field is an element of a typed
 * array indexed by slot.
 */

/** No slot: the end of a list, or not found. */
export const NONE = -1;

const INITIAL_SLOTS = 256;
const CHUNK_BYTES = 1 << 20;

/** Record sizes are rounded up to a class: multiples of 16 bytes up to 1 KiB, then powers of two. */
function sizeClass(bytes: number): number {
  if (bytes <= 1024) return bytes <= 16 ? 0 : ((bytes + 15) >> 4) - 1;
  return 64 + (32 - Math.clz32(bytes - 1)) - 11;
}

function classBytes(sizeClassIndex: number): number {
  return sizeClassIndex < 64 ? (sizeClassIndex + 1) << 4 : 2 ** (sizeClassIndex - 64 + 11);
}

/**
 * Record memory: per size class, slices of shared 1 MiB buffers (a record
 * larger than that gets a buffer of its own), and a free list of released
 * slices for the next record of that class. Memory goes back only when the
 * whole table is reset (the cache is cleared): the cache is bounded, so what
 * it holds at its fullest is what it keeps.
 */
class Arena {
  chunks: Buffer[] = [];
  /** Per size class: released slices, as (chunk, offset) pairs. */
  private free: number[][] = [];
  /** Per size class: the chunk being carved and where its unused part starts. */
  private carving: Array<{ chunk: number; offset: number; end: number } | undefined> = [];
  /** Where alloc() put the record. */
  chunk = 0;
  offset = 0;

  alloc(bytes: number): void {
    const c = sizeClass(bytes);
    const released = this.free[c];
    if (released !== undefined && released.length > 0) {
      this.offset = released.pop()!;
      this.chunk = released.pop()!;
      return;
    }
    const size = classBytes(c);
    let carving = this.carving[c];
    if (carving === undefined || carving.offset + size > carving.end) {
      const chunkBytes = size >= CHUNK_BYTES ? size : CHUNK_BYTES - (CHUNK_BYTES % size);
      this.chunks.push(Buffer.allocUnsafeSlow(chunkBytes));
      carving = this.carving[c] = { chunk: this.chunks.length - 1, offset: 0, end: chunkBytes };
    }
    this.chunk = carving.chunk;
    this.offset = carving.offset;
    carving.offset += size;
  }

  release(chunk: number, offset: number, bytes: number): void {
    const c = sizeClass(bytes);
    (this.free[c] ??= []).push(chunk, offset);
  }

  reset(): void {
    this.chunks = [];
    this.free = [];
    this.carving = [];
  }

  /** Bytes held in buffers. */
  get bytes(): number {
    let total = 0;
    for (const chunk of this.chunks) total += chunk.length;
    return total;
  }
}

// ---- text in records: a 4-byte header (length in UTF-16 units << 1 | 1 when stored as UTF-16), then the characters ----

/** Any UTF-16 unit above 0xff (surrogates included: without the u flag a regular expression sees units). */
const WIDE = /[\u0100-\uffff]/;
const NULL_TEXT = 0xffffffff;

/** Bytes writeText takes for `text`. */
export function textBytes(text: string | null): number {
  if (text === null) return 4;
  return 4 + (WIDE.test(text) ? text.length * 2 : text.length);
}

/** Writes `text` (any string, or null) at `at`; returns where the next field starts. */
export function writeText(buffer: Buffer, at: number, text: string | null): number {
  if (text === null) {
    buffer.writeUInt32LE(NULL_TEXT, at);
    return at + 4;
  }
  const wide = WIDE.test(text);
  buffer.writeUInt32LE(text.length * 2 + (wide ? 1 : 0), at);
  at += 4;
  // latin1 stores one byte per character (all are below 256); utf16le copies the string's UTF-16 units as they are.
  return at + buffer.write(text, at, wide ? "utf16le" : "latin1");
}

/** Where readText and its companions read next: reading is synchronous, so one cursor serves every call. */
let cursor = 0;

export function seek(at: number): void {
  cursor = at;
}

export function readText(buffer: Buffer): string | null {
  const header = buffer.readUInt32LE(cursor);
  cursor += 4;
  if (header === NULL_TEXT) return null;
  const length = header >>> 1;
  if ((header & 1) === 0) {
    cursor += length;
    return buffer.latin1Slice(cursor - length, cursor);
  }
  cursor += length * 2;
  return buffer.ucs2Slice(cursor - length * 2, cursor);
}

export function readByte(buffer: Buffer): number {
  return buffer[cursor++];
}

export function readUInt32(buffer: Buffer): number {
  cursor += 4;
  return buffer.readUInt32LE(cursor - 4);
}

export function readDouble(buffer: Buffer): number {
  cursor += 8;
  return buffer.readDoubleLE(cursor - 8);
}

declare global {
  interface Buffer {
    // Node's own fast paths behind toString("latin1" | "utf16le"), without its argument checks (not in @types/node).
    latin1Slice(start: number, end: number): string;
    ucs2Slice(start: number, end: number): string;
  }
}

/** FNV-1a over the kind and the key's UTF-16 units. */
function hashOf(kind: number, key: string): number {
  let h = (0x811c9dc5 ^ kind) >>> 0;
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), 0x01000193);
  return h | 0;
}

/**
 * Records by (kind, key), each in a slot. Besides the record, a slot has
 * fields for its owner (the typed arrays below): LRU links, list links and
 * an expiry. Slots are handed out again after `delete`; `reset` frees all.
 */
export class RecordTable {
  private capacity = 0;
  /** 0: free; else the kind the record was added with. */
  private kind!: Uint8Array;
  private hash!: Int32Array;
  private chunk!: Int32Array;
  private offset!: Int32Array;
  private length!: Int32Array;
  older!: Int32Array;
  newer!: Int32Array;
  /** For an entry: its list's head record (an organisation). */
  owner!: Int32Array;
  previous!: Int32Array;
  /** For an entry: the next in its list; for a list's head record: the first entry. */
  next!: Int32Array;
  expires!: Float64Array;
  /** Open addressing, linear probing: slot + 1, 0 where empty; twice the slots, a power of two. */
  private index!: Int32Array;
  private mask = 0;
  private freeSlots!: Int32Array;
  private freeCount = 0;
  private unused = 0;
  private readonly arena = new Arena();

  constructor() {
    this.reset();
  }

  reset(): void {
    this.arena.reset();
    this.freeCount = 0;
    this.unused = 0;
    this.allocate(INITIAL_SLOTS, false);
  }

  /** The slot of the record with this kind and key, or NONE. */
  find(kind: number, key: string): number {
    const h = hashOf(kind, key);
    const index = this.index;
    const mask = this.mask;
    for (let i = h & mask; ; i = (i + 1) & mask) {
      const found = index[i] - 1;
      if (found === NONE) return NONE;
      if (this.hash[found] === h && this.kind[found] === kind && this.keyEquals(found, key)) return found;
    }
  }

  /**
   * Adds a record (no record with this kind and key may exist) of `bytes`
   * bytes, its key already counted in them; returns its slot. The caller
   * writes the rest of the record from bodyStart(slot), before any other
   * change to the table.
   */
  add(kind: number, key: string, bytes: number): number {
    if (this.freeCount === 0 && this.unused === this.capacity) this.grow();
    const slot = this.freeCount > 0 ? this.freeSlots[--this.freeCount] : this.unused++;
    const h = hashOf(kind, key);
    this.arena.alloc(bytes);
    this.kind[slot] = kind;
    this.hash[slot] = h;
    this.chunk[slot] = this.arena.chunk;
    this.offset[slot] = this.arena.offset;
    this.length[slot] = bytes;
    this.older[slot] = this.newer[slot] = this.owner[slot] = this.previous[slot] = this.next[slot] = NONE;
    this.expires[slot] = 0;
    writeText(this.arena.chunks[this.arena.chunk], this.arena.offset, key);
    this.place(slot);
    return slot;
  }

  delete(slot: number): void {
    const mask = this.mask;
    const index = this.index;
    let i = this.hash[slot] & mask;
    while (index[i] !== slot + 1) i = (i + 1) & mask;
    // Backward-shift deletion: move later records of the probe run into the gap, so that no tombstones build up.
    for (let j = (i + 1) & mask; index[j] !== 0; j = (j + 1) & mask) {
      const home = this.hash[index[j] - 1] & mask;
      // The record at j may move to i if its home position is not in (i, j] (cyclically).
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        index[i] = index[j];
        i = j;
      }
    }
    index[i] = 0;
    this.arena.release(this.chunk[slot], this.offset[slot], this.length[slot]);
    this.kind[slot] = 0;
    this.freeSlots[this.freeCount++] = slot;
  }

  /** The buffer holding the slot's record; it starts at recordStart(slot). */
  buffer(slot: number): Buffer {
    return this.arena.chunks[this.chunk[slot]];
  }

  /** Where the record starts: its key. */
  recordStart(slot: number): number {
    return this.offset[slot];
  }

  /** Where the record's part after its key starts. */
  bodyStart(slot: number): number {
    const header = this.buffer(slot).readUInt32LE(this.offset[slot]);
    return this.offset[slot] + 4 + (header & 1 ? (header >>> 1) * 2 : header >>> 1);
  }

  /** Slots in use. */
  get used(): number {
    return this.unused - this.freeCount;
  }

  /** Memory held outside the JavaScript heap, in bytes. */
  get bytes(): number {
    const perSlot = 1 + 4 * 9 + 8 + 4; // the typed arrays above, the free list included
    return this.arena.bytes + this.capacity * perSlot + this.index.length * 4;
  }

  private keyEquals(slot: number, key: string): boolean {
    const buffer = this.arena.chunks[this.chunk[slot]];
    let at = this.offset[slot];
    const header = buffer.readUInt32LE(at);
    if (header >>> 1 !== key.length) return false;
    at += 4;
    if ((header & 1) === 0) {
      for (let i = 0; i < key.length; i++) if (buffer[at + i] !== key.charCodeAt(i)) return false;
    } else {
      for (let i = 0; i < key.length; i++) if (buffer[at + 2 * i] + (buffer[at + 2 * i + 1] << 8) !== key.charCodeAt(i)) return false;
    }
    return true;
  }

  /** The per-slot arrays and the index at `capacity` slots; `keep`: what the slots held is copied and indexed again. */
  private allocate(capacity: number, keep: boolean): void {
    const sized = <T extends Int32Array | Uint8Array | Float64Array>(old: T | undefined, make: new (n: number) => T): T => {
      const fresh = new make(capacity);
      if (keep && old !== undefined) fresh.set(old);
      return fresh;
    };
    this.kind = sized(this.kind, Uint8Array);
    this.hash = sized(this.hash, Int32Array);
    this.chunk = sized(this.chunk, Int32Array);
    this.offset = sized(this.offset, Int32Array);
    this.length = sized(this.length, Int32Array);
    this.older = sized(this.older, Int32Array);
    this.newer = sized(this.newer, Int32Array);
    this.owner = sized(this.owner, Int32Array);
    this.previous = sized(this.previous, Int32Array);
    this.next = sized(this.next, Int32Array);
    this.expires = sized(this.expires, Float64Array);
    this.freeSlots = sized(this.freeSlots, Int32Array);
    this.capacity = capacity;
    this.index = new Int32Array(capacity * 2);
    this.mask = this.index.length - 1;
    if (keep) for (let slot = 0; slot < this.unused; slot++) if (this.kind[slot] !== 0) this.place(slot);
  }

  /** Twice the slots. */
  private grow(): void {
    this.allocate(this.capacity * 2, true);
  }

  /** Enters the slot in the index, at the first free position from its hash's. */
  private place(slot: number): void {
    let i = this.hash[slot] & this.mask;
    while (this.index[i] !== 0) i = (i + 1) & this.mask;
    this.index[i] = slot + 1;
  }
}
