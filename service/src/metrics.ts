// Prometheus metrics of the service (prom-client), served on their own HTTP
// port (METRICS_PORT) at /metrics to callers holding an API token of any
// scope: deny by default, like every other entry point. Labels carry
// providers, sources, outcomes and kinds, never ids or keys.
import http from "node:http";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { TokenStore } from "./auth/token-store.js";
import type { Logger } from "./logger.js";

export type ResolveResult = "ok" | "not_found" | "failed_precondition" | "data_loss" | "unavailable" | "invalid_argument" | "error";

export class ServiceMetrics {
  readonly registry = new Registry();
  private readonly resolutions: Counter<"provider" | "source" | "result">;
  private readonly resolveSeconds: Histogram<"provider">;
  private readonly cacheLookups: Counter<"result">;
  private readonly invalidations: Counter<"kind" | "origin">;
  private readonly verifications: Counter<"provider" | "outcome">;
  private readonly failureReports: Counter<"kind">;
  private readonly healthTransitions: Counter<"to">;
  // Pre-bound children: the hot path does no label hashing.
  private readonly hit;
  private readonly miss;
  private readonly timers = new Map<string, ReturnType<Histogram<"provider">["labels"]>>();
  private readonly resolutionChildren = new Map<string, ReturnType<Counter<"provider" | "source" | "result">["labels"]>>();

  constructor(options: { cacheEntries?: () => number; defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry, prefix: "provider_credentials_" });
    this.resolutions = new Counter({
      name: "provider_credentials_resolutions_total",
      help: "ResolveKey calls by provider, where the key came from (organization, environment or none) and result.",
      labelNames: ["provider", "source", "result"],
      registers,
    });
    this.resolveSeconds = new Histogram({
      name: "provider_credentials_resolve_duration_seconds",
      help: "Time ResolveKey spent in the service (cache look-up, database on a miss, decryption), by provider.",
      labelNames: ["provider"],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers,
    });
    this.cacheLookups = new Counter({
      name: "provider_credentials_cache_lookups_total",
      help: "Resolution cache look-ups by result (hit or miss).",
      labelNames: ["result"],
      registers,
    });
    this.hit = this.cacheLookups.labels("hit");
    this.miss = this.cacheLookups.labels("miss");
    new Gauge({
      name: "provider_credentials_cache_entries",
      help: "Resolutions held in this replica's cache.",
      registers,
      collect: options.cacheEntries
        ? function (this: Gauge) {
            this.set(options.cacheEntries!());
          }
        : undefined,
    });
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
  }

  resolved(provider: string, source: "organization" | "environment" | "none", result: ResolveResult, seconds: number): void {
    const key = `${provider}|${source}|${result}`;
    let counter = this.resolutionChildren.get(key);
    if (!counter) this.resolutionChildren.set(key, (counter = this.resolutions.labels(provider, source, result)));
    counter.inc();
    let timer = this.timers.get(provider);
    if (!timer) this.timers.set(provider, (timer = this.resolveSeconds.labels(provider)));
    timer.observe(seconds);
  }

  cacheHit(): void {
    this.hit.inc();
  }

  cacheMiss(): void {
    this.miss.inc();
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

/**
 * GET /metrics in the Prometheus text format, for a bearer token of any
 * scope (`authorization: Bearer <token>` in the scrape configuration).
 */
export async function startMetricsServer(options: {
  host: string;
  port: number;
  metrics: ServiceMetrics;
  tokens: TokenStore;
  logger: Logger;
}): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
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
        return send(res, 401, "unauthenticated: send authorization: Bearer <an API token of any scope>\n");
      }
      const body = await options.metrics.registry.metrics();
      res.setHeader("content-type", options.metrics.registry.contentType);
      send(res, 200, req.method === "HEAD" ? "" : body);
    })().catch((error: unknown) => {
      options.logger.error({ err: error }, "metrics request failed");
      if (!res.headersSent) send(res, 500, "internal error\n");
      else res.destroy();
    });
  });
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
