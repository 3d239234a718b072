// Prometheus metrics of the service (prom-client), served on their own HTTP
// port (METRICS_PORT, over TLS when the service serves TLS) at /metrics to
// callers holding a `metrics` or `admin` token: deny by default, like every
// other entry point, and never to a `resolve` token. Labels carry
// providers, sources, outcomes and kinds, never ids or keys.
//
// ResolveKey is the hot path (thousands of calls a second per core), so its
// counts — resolutions and cache look-ups — are kept in plain preallocated
// numbers and handed to prom-client only when scraped: counting allocates
// nothing and hashes no labels. Its duration goes to a prom-client Histogram
// through a child bound once per known provider. Labels outside the known
// providers, sources and results still count, through a slower path.
import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { TokenStore } from "./auth/token-store.js";
import { PROVIDER_NAMES } from "@provider-credentials/wire/providers";
import type { Logger } from "./logger.js";
import { tlsServerOptions, type TlsConfig } from "./runtime/tls.js";

// "ok" first: the look-ups below scan these lists in order.
const RESOLVE_RESULTS = ["ok", "not_found", "failed_precondition", "permission_denied", "data_loss", "unavailable", "invalid_argument", "error"] as const;
export type ResolveResult = (typeof RESOLVE_RESULTS)[number];
type ResolveSource = "organization" | "environment" | "none";
const RESOLVE_SOURCES: readonly ResolveSource[] = ["organization", "environment", "none"];

const RESOLVE_SECONDS_BUCKETS: readonly number[] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

type CounterChild = ReturnType<Counter<string>["labels"]>;
type HistogramChild = ReturnType<Histogram<string>["labels"]>;

/** The position of `value` in `list`, or -1. */
function indexIn(list: readonly string[], value: string): number {
  for (let i = 0; i < list.length; i++) if (list[i] === value) return i;
  return -1;
}

export class ServiceMetrics {
  readonly registry = new Registry();
  private readonly resolutions: Counter<"provider" | "source" | "result">;
  private readonly resolveSeconds: Histogram<"provider">;
  /** The duration histogram's child of each known provider, by its index in PROVIDER_NAMES. */
  private readonly resolveSecondsByProvider: HistogramChild[];
  private readonly cacheLookups: Counter<"result">;
  private readonly invalidations: Counter<"kind" | "origin">;
  private readonly verifications: Counter<"provider" | "outcome">;
  private readonly failureReports: Counter<"kind">;
  private readonly healthTransitions: Counter<"to">;
  private readonly listenerUp: Gauge;
  private readonly hit: CounterChild;
  private readonly miss: CounterChild;
  /** Cache look-ups: hits, misses, then the hits and misses already handed to prom-client. */
  private readonly cacheCounts = new Float64Array(4);
  /**
   * Resolutions of known provider × source × result, counted since start, and the part
   * already handed to prom-client. The prom-client child of a cell is made on its first
   * use, so series appear in the order they were first counted, as before.
   */
  private readonly resolutionTotals = new Float64Array(PROVIDER_NAMES.length * RESOLVE_SOURCES.length * RESOLVE_RESULTS.length);
  private readonly resolutionPublished = new Float64Array(this.resolutionTotals.length);
  private readonly resolutionCells: (CounterChild | undefined)[] = new Array<CounterChild | undefined>(this.resolutionTotals.length).fill(undefined);
  /** Unknown labels: prom-client children, counted directly. */
  private readonly resolutionChildren = new Map<string, CounterChild>();

  constructor(options: { cacheEntries?: () => number; cacheBytes?: () => number; defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: "provider_credentials_" });
    this.resolutions = new Counter({
      name: "provider_credentials_resolutions_total",
      help: "ResolveKey calls by provider, where the key came from (organization, environment or none) and result.",
      labelNames: ["provider", "source", "result"],
      registers,
      collect: () => this.publishResolutions(),
    });
    this.resolveSeconds = new Histogram({
      name: "provider_credentials_resolve_duration_seconds",
      help: "Time ResolveKey spent in the service (cache look-up, database on a miss, decryption), by provider.",
      labelNames: ["provider"],
      buckets: [...RESOLVE_SECONDS_BUCKETS],
      registers,
    });
    // A child makes no series until its first observation: series keep the order they were first observed in.
    this.resolveSecondsByProvider = PROVIDER_NAMES.map((provider) => this.resolveSeconds.labels(provider));
    this.cacheLookups = new Counter({
      name: "provider_credentials_cache_lookups_total",
      help: "Resolution cache look-ups by result (hit or miss).",
      labelNames: ["result"],
      registers,
      collect: () => this.publishCacheLookups(),
    });
    this.hit = this.cacheLookups.labels("hit");
    this.miss = this.cacheLookups.labels("miss");
    // A gauge read when scraped, from the cache (none without one).
    const readGauge = (name: string, help: string, read: (() => number) | undefined) =>
      new Gauge({
        name,
        help,
        registers,
        collect:
          read &&
          function (this: Gauge) {
            this.set(read());
          },
      });
    readGauge("provider_credentials_cache_entries", "Resolutions held in this replica's cache.", options.cacheEntries);
    readGauge(
      "provider_credentials_cache_bytes",
      "Memory this replica's resolution cache holds outside the JavaScript heap (records, links and index), in bytes.",
      options.cacheBytes,
    );
    this.invalidations = new Counter({
      name: "provider_credentials_cache_invalidations_total",
      help: "Cache invalidations by what they covered (organization, team, all) and where they came from (local change, notify from any replica, listener reconnect).",
      labelNames: ["kind", "origin"],
      registers,
    });
    this.verifications = new Counter({
      name: "provider_credentials_key_checks_total",
      help: "Checks of keys against their providers by provider and outcome.",
      labelNames: ["provider", "outcome"],
      registers,
    });
    this.failureReports = new Counter({
      name: "provider_credentials_failure_reports_total",
      help: "Failures reported by callers (ReportKeyFailure) by kind.",
      labelNames: ["kind"],
      registers,
    });
    this.healthTransitions = new Counter({
      name: "provider_credentials_health_transitions_total",
      help: "Credentials marked failing or recovered.",
      labelNames: ["to"],
      registers,
    });
    this.listenerUp = new Gauge({
      name: "provider_credentials_invalidation_listener_up",
      help: "1 while this replica's cache invalidation connection (LISTEN) is connected; 0 before it first connects and while it is down (the cache is bypassed then).",
      registers,
    });
    this.listenerUp.set(0);
  }

  /** The invalidation listener connected (true) or lost its connection (false). */
  invalidationListener(up: boolean): void {
    this.listenerUp.set(up ? 1 : 0);
  }

  resolved(provider: string, source: ResolveSource, result: ResolveResult, seconds: number): void {
    const p = indexIn(PROVIDER_NAMES, provider);
    const s = indexIn(RESOLVE_SOURCES, source);
    const r = indexIn(RESOLVE_RESULTS, result);
    if (p >= 0 && s >= 0 && r >= 0) {
      const cell = (p * RESOLVE_SOURCES.length + s) * RESOLVE_RESULTS.length + r;
      if (this.resolutionTotals[cell]++ === 0) this.firstResolution(cell, provider, source, result);
    } else {
      const key = `${provider}|${source}|${result}`;
      let counter = this.resolutionChildren.get(key);
      if (!counter) this.resolutionChildren.set(key, (counter = this.resolutions.labels(provider, source, result)));
      counter.inc();
    }
    if (p >= 0) this.resolveSecondsByProvider[p].observe(seconds);
    else this.resolveSeconds.observe({ provider }, seconds);
  }

  cacheHit(): void {
    // The first look-up creates the series, so hits and misses keep the order they first happened in.
    if (this.cacheCounts[0]++ === 0) this.hit.inc(0);
  }

  cacheMiss(): void {
    if (this.cacheCounts[1]++ === 0) this.miss.inc(0);
  }

  /** The first resolution of a known cell: its prom-client series, at 0 until the next scrape adds the counts. */
  private firstResolution(cell: number, provider: string, source: string, result: string): void {
    const child = this.resolutions.labels(provider, source, result);
    child.inc(0);
    this.resolutionCells[cell] = child;
  }

  /** At scrape time: adds what the hot path counted since the last scrape to the prom-client series. */
  private publishResolutions(): void {
    const totals = this.resolutionTotals;
    const published = this.resolutionPublished;
    for (let cell = 0; cell < totals.length; cell++) {
      const delta = totals[cell] - published[cell];
      if (delta > 0) {
        this.resolutionCells[cell]!.inc(delta);
        published[cell] = totals[cell];
      }
    }
  }

  private publishCacheLookups(): void {
    const counts = this.cacheCounts;
    if (counts[0] > counts[2]) {
      this.hit.inc(counts[0] - counts[2]);
      counts[2] = counts[0];
    }
    if (counts[1] > counts[3]) {
      this.miss.inc(counts[1] - counts[3]);
      counts[3] = counts[1];
    }
  }

  invalidated(kind: "organization" | "team" | "all", origin: "local" | "notify" | "reconnect"): void {
    this.invalidations.labels(kind, origin).inc();
  }

  checked(provider: string, outcome: string): void {
    this.verifications.labels(provider, outcome).inc();
  }

  failureReported(kind: string): void {
    this.failureReports.labels(kind).inc();
  }

  healthChanged(to: "failing" | "recovered", count = 1): void {
    if (count > 0) this.healthTransitions.labels(to).inc(count);
  }
}

/** Scopes that may scrape. */
const SCRAPE_SCOPES: readonly string[] = ["metrics", "admin"];

/**
 * GET /metrics in the Prometheus text format, for a bearer token of scope
 * `metrics` or `admin` (`authorization: Bearer <token>` in the scrape
 * configuration); over TLS (mutual TLS with a client CA) when `tls` is set.
 */
export async function startMetricsServer(options: {
  host: string;
  port: number;
  metrics: ServiceMetrics;
  tokens: TokenStore;
  logger: Logger;
  tls?: TlsConfig;
}): Promise<{ port: number; close(): Promise<void> }> {
  const tls = options.tls;
  const handler: http.RequestListener = (req, res) => {
    void (async () => {
      const path = (req.url ?? "/").split("?")[0];
      if (path !== "/metrics") return send(res, 404, "not found: metrics are served at /metrics\n");
      if (req.method !== "GET" && req.method !== "HEAD") {
        res.setHeader("allow", "GET, HEAD");
        return send(res, 405, "method not allowed\n");
      }
      const match = /^bearer\s+(\S+)$/i.exec(req.headers.authorization ?? "");
      const principal = match ? await options.tokens.authenticate(match[1]).catch(() => undefined) : undefined;
      if (!principal) {
        res.setHeader("www-authenticate", 'Bearer realm="provider-credentials metrics"');
        return send(res, 401, "unauthenticated: send authorization: Bearer <a token of scope metrics or admin>\n");
      }
      if (!SCRAPE_SCOPES.includes(principal.scope)) {
        return send(res, 403, `permission denied: token "${principal.name}" has scope "${principal.scope}"; metrics need a token of scope metrics or admin\n`);
      }
      const body = await options.metrics.registry.metrics();
      res.setHeader("content-type", options.metrics.registry.contentType);
      send(res, 200, req.method === "HEAD" ? "" : body);
    })().catch((error: unknown) => {
      options.logger.error({ err: error }, "metrics request failed");
      if (!res.headersSent) send(res, 500, "internal error\n");
      else res.destroy();
    });
  };
  const server = tls ? https.createServer(tlsServerOptions(tls), handler) : http.createServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

function send(res: http.ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  res.setHeader("cache-control", "no-store");
  if (!res.hasHeader("content-type")) res.setHeader("content-type", "text/plain; charset=utf-8");
  res.end(body);
}
