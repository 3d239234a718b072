// ServiceMetrics keeps the ResolveKey hot path's counts in plain numbers and hands
// them to prom-client at scrape time: the exposition must read exactly as if every
// call had gone through prom-client's own Counter and Histogram.
import { describe, expect, it } from "vitest";
import fc from "fast-check";
import { Counter, Histogram, Registry } from "prom-client";
import { ServiceMetrics, type ResolveResult } from "../../service/src/metrics.js";

const RESOLUTIONS = "provider_credentials_resolutions_total";
const DURATION = "provider_credentials_resolve_duration_seconds";
const LOOKUPS = "provider_credentials_cache_lookups_total";
const BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];
type Source = "organization" | "environment" | "none";

/** The same three metrics, fed call by call through prom-client as ServiceMetrics once did. */
function reference() {
  const registry = new Registry();
  const registers = [registry];
  const resolutions = new Counter({
    name: RESOLUTIONS,
    help: "ResolveKey calls by provider, where the key came from (organization, environment or none) and result.",
    labelNames: ["provider", "source", "result"],
    registers,
  });
  const duration = new Histogram({
    name: DURATION,
    help: "Time ResolveKey spent in the service (cache look-up, database on a miss, decryption), by provider.",
    labelNames: ["provider"],
    buckets: BUCKETS,
    registers,
  });
  const lookups = new Counter({ name: LOOKUPS, help: "Resolution cache look-ups by result (hit or miss).", labelNames: ["result"], registers });
  return {
    registry,
    resolved(provider: string, source: Source, result: ResolveResult, seconds: number) {
      resolutions.labels(provider, source, result).inc();
      duration.labels(provider).observe(seconds);
    },
    cacheHit: () => lookups.labels("hit").inc(),
    cacheMiss: () => lookups.labels("miss").inc(),
  };
}

async function exposition(registry: Registry, names = [RESOLUTIONS, DURATION, LOOKUPS]): Promise<string> {
  const parts = [];
  for (const name of names) parts.push(await registry.getSingleMetricAsString(name));
  return parts.join("\n\n");
}

/** The value of one series in the exposition text (undefined when absent). */
function value(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe("ServiceMetrics", () => {
  it("publishes resolutions, durations and cache look-ups at scrape time", async () => {
    const metrics = new ServiceMetrics({ defaultMetrics: false });
    metrics.resolved("openai", "organization", "ok", 0.00003); // le 0.00005
    metrics.resolved("openai", "organization", "ok", 0.0001); // exactly on a bound: le 0.0001
    metrics.resolved("openai", "environment", "ok", 0.3); // le 0.5
    metrics.resolved("openai", "none", "unavailable", 4); // above every bound: +Inf only
    metrics.resolved("gemini", "none", "not_found", 0.002);
    metrics.cacheHit();
    metrics.cacheHit();
    metrics.cacheMiss();
    const text = await metrics.registry.metrics();

    expect(text).toContain(`# TYPE ${RESOLUTIONS} counter`);
    expect(text).toContain(`# TYPE ${DURATION} histogram`);
    expect(value(text, RESOLUTIONS, 'provider="openai",source="organization",result="ok"')).toBe(2);
    expect(value(text, RESOLUTIONS, 'provider="openai",source="environment",result="ok"')).toBe(1);
    expect(value(text, RESOLUTIONS, 'provider="openai",source="none",result="unavailable"')).toBe(1);
    expect(value(text, RESOLUTIONS, 'provider="gemini",source="none",result="not_found"')).toBe(1);
    expect(value(text, RESOLUTIONS, 'provider="anthropic",source="organization",result="ok"')).toBeUndefined();
    expect(value(text, LOOKUPS, 'result="hit"')).toBe(2);
    expect(value(text, LOOKUPS, 'result="miss"')).toBe(1);

    // Cumulative buckets, +Inf = _count, _sum the plain sum.
    const bucket = (le: string, provider = "openai") => value(text, `${DURATION}_bucket`, `le="${le}",provider="${provider}"`);
    expect(bucket("0.00005")).toBe(1);
    expect(bucket("0.0001")).toBe(2);
    expect(bucket("0.25")).toBe(2);
    expect(bucket("0.5")).toBe(3);
    expect(bucket("2.5")).toBe(3);
    expect(bucket("+Inf")).toBe(4);
    expect(value(text, `${DURATION}_count`, 'provider="openai"')).toBe(4);
    expect(value(text, `${DURATION}_sum`, 'provider="openai"')).toBe(0.00003 + 0.0001 + 0.3 + 4);
    expect(bucket("0.001", "gemini")).toBe(0);
    expect(bucket("0.0025", "gemini")).toBe(1);
    expect(value(text, `${DURATION}_count`, 'provider="anthropic"')).toBeUndefined();
    // Every bucket line of a series, in bound order, then +Inf, _sum and _count.
    const openai = text.split("\n").filter((l) => l.startsWith(DURATION) && l.includes('provider="openai"'));
    expect(openai.map((l) => /le="([^"]+)"/.exec(l)?.[1] ?? l.split("{")[0])).toEqual([...BUCKETS.map(String), "+Inf", `${DURATION}_sum`, `${DURATION}_count`]);
  });

  it("keeps counters monotonic across scrapes and adds exactly what happened in between", async () => {
    const metrics = new ServiceMetrics({ defaultMetrics: false });
    const run = (n: number) => {
      for (let i = 0; i < n; i++) {
        metrics.resolved("anthropic", "organization", "ok", 0.0002);
        metrics.resolved("made-up", "none", "invalid_argument", 0.02);
        metrics.cacheHit();
      }
    };
    const read = (text: string) => [
      value(text, RESOLUTIONS, 'provider="anthropic",source="organization",result="ok"'),
      value(text, RESOLUTIONS, 'provider="made-up",source="none",result="invalid_argument"'),
      value(text, `${DURATION}_count`, 'provider="anthropic"'),
      value(text, `${DURATION}_bucket`, 'le="0.00025",provider="anthropic"'),
      value(text, `${DURATION}_count`, 'provider="made-up"'),
      value(text, LOOKUPS, 'result="hit"'),
    ];
    run(3);
    const first = await metrics.registry.metrics();
    const again = await metrics.registry.metrics();
    expect(again).toBe(first); // a scrape publishes nothing twice
    expect(read(first)).toEqual([3, 3, 3, 3, 3, 3]);
    run(4);
    expect(read(await metrics.registry.metrics())).toEqual([7, 7, 7, 7, 7, 7]);
    expect(read(await metrics.registry.metrics())).toEqual([7, 7, 7, 7, 7, 7]);
    run(1);
    expect(read(await metrics.registry.metrics())).toEqual([8, 8, 8, 8, 8, 8]);
  });

  it("still counts and times providers, sources and results it does not know", async () => {
    const metrics = new ServiceMetrics({ defaultMetrics: false });
    metrics.resolved("mistral", "organization", "ok", 0.001);
    metrics.resolved("mistral", "organization", "ok", 0.003);
    metrics.resolved("", "none", "error", 0.5);
    metrics.resolved("openai", "elsewhere" as Source, "ok", 0.001);
    metrics.resolved("openai", "organization", "timeout" as ResolveResult, 0.001);
    const text = await metrics.registry.metrics();
    expect(value(text, RESOLUTIONS, 'provider="mistral",source="organization",result="ok"')).toBe(2);
    expect(value(text, RESOLUTIONS, 'provider="",source="none",result="error"')).toBe(1);
    expect(value(text, RESOLUTIONS, 'provider="openai",source="elsewhere",result="ok"')).toBe(1);
    expect(value(text, RESOLUTIONS, 'provider="openai",source="organization",result="timeout"')).toBe(1);
    expect(value(text, `${DURATION}_bucket`, 'le="0.001",provider="mistral"')).toBe(1);
    expect(value(text, `${DURATION}_bucket`, 'le="0.005",provider="mistral"')).toBe(2);
    expect(value(text, `${DURATION}_sum`, 'provider="mistral"')).toBe(0.001 + 0.003);
    expect(value(text, `${DURATION}_count`, 'provider=""')).toBe(1);
    expect(value(text, `${DURATION}_count`, 'provider="openai"')).toBe(2);
  });

  it("rejects a duration that is not a finite number, as prom-client does", () => {
    const metrics = new ServiceMetrics({ defaultMetrics: false });
    expect(() => metrics.resolved("openai", "organization", "ok", Number.NaN)).toThrow(TypeError);
  });

  it("reads exactly like prom-client fed call by call, series order included, across scrapes", async () => {
    const providers = ["openai", "anthropic", "gemini", "fireworks", "other", ""];
    const sources: Source[] = ["organization", "environment", "none"];
    const results: ResolveResult[] = ["ok", "not_found", "failed_precondition", "data_loss", "unavailable", "invalid_argument", "error"];
    const seconds = fc.oneof(fc.constantFrom(...BUCKETS, 0, 3, 1e-7), fc.double({ min: 0, max: 5, noNaN: true }));
    const op = fc.oneof(
      fc.tuple(fc.constant("resolved" as const), fc.constantFrom(...providers), fc.constantFrom(...sources), fc.constantFrom(...results), seconds),
      fc.tuple(fc.constantFrom("cacheHit" as const, "cacheMiss" as const, "scrape" as const)),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 60 }), async (ops) => {
        const metrics = new ServiceMetrics({ defaultMetrics: false });
        const expected = reference();
        for (const [name, ...args] of ops) {
          if (name === "scrape") expect(await exposition(metrics.registry)).toBe(await exposition(expected.registry));
          else if (name === "resolved") {
            const [provider, source, result, s] = args as [string, Source, ResolveResult, number];
            metrics.resolved(provider, source, result, s);
            expected.resolved(provider, source, result, s);
          } else {
            metrics[name]();
            expected[name]();
          }
        }
        expect(await exposition(metrics.registry)).toBe(await exposition(expected.registry));
        expect(JSON.stringify((await metrics.registry.getMetricsAsJSON()).filter((m) => [RESOLUTIONS, DURATION, LOOKUPS].includes(m.name)))).toBe(
          JSON.stringify(await expected.registry.getMetricsAsJSON()),
        );
      }),
      { numRuns: 200 },
    );
  });

  it("reports whether the invalidation listener is connected: 0 until it connects, 1 while connected, 0 when it drops", async () => {
    const metrics = new ServiceMetrics({ defaultMetrics: false });
    const up = async () => /^provider_credentials_invalidation_listener_up (\S+)$/m.exec(await metrics.registry.metrics())?.[1];
    expect(await up()).toBe("0");
    metrics.invalidationListener(true);
    expect(await up()).toBe("1");
    metrics.invalidationListener(false);
    expect(await up()).toBe("0");
  });
});
