import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Health, HealthCheckResponse_ServingStatus as Status } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { DEFAULT_HEALTH_MAX_WATCHERS } from "./connection-limits.js";

export { Health as HealthService };

/**
 * The health service name that reports readiness (docs/operations/health.md): NOT_SERVING while
 * the database has been unreachable for longer than the outage grace, and during shutdown.
 * "" (the whole server) and the product's services report liveness: NOT_SERVING only at shutdown.
 */
export const READINESS_SERVICE = "readiness";

/**
 * Serving status for grpc.health.v1: SERVING until shutdown begins, then
 * NOT_SERVING so that load balancers stop sending calls before we exit.
 * READINESS_SERVICE is also NOT_SERVING while the service is not ready (setReady).
 */
export class HealthState {
  private serving = true;
  private ready = true;
  private ended = false;
  private readonly watchers = new Set<() => void>();
  private readonly listeners = new Set<() => void>();
  /** The names with a status of their own besides "" (READINESS_SERVICE included). */
  readonly services: readonly string[];
  private watching = 0;

  /**
   * The services with a status of their own; "" (the whole server) has one too. `maxWatchers`
   * bounds the Watch streams open at once on both ports together (HEALTH_MAX_WATCHERS): health
   * needs no token, so without a bound anyone could hold any number of streams open.
   * READINESS_SERVICE is always among the services.
   */
  constructor(
    services: readonly string[],
    public maxWatchers = DEFAULT_HEALTH_MAX_WATCHERS,
  ) {
    this.services = services.includes(READINESS_SERVICE) ? services : [...services, READINESS_SERVICE];
  }

  /** Watch streams open now (both ports). */
  get watcherCount(): number {
    return this.watching;
  }

  /**
   * Admits one more Watch stream: a function to call (once) when it ends, or a RESOURCE_EXHAUSTED
   * ConnectError when `maxWatchers` streams are already open.
   */
  admitWatcher(): (() => void) | ConnectError {
    if (this.watching >= this.maxWatchers) {
      return new ConnectError(
        `too many health watchers: ${this.maxWatchers} Watch streams are open (HEALTH_MAX_WATCHERS); use Check, or Watch again later`,
        Code.ResourceExhausted,
      );
    }
    this.watching++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.watching--;
    };
  }

  status(service: string): Status | undefined {
    if (service !== "" && !this.services.includes(service)) return undefined;
    if (service === READINESS_SERVICE && !this.ready) return Status.NOT_SERVING;
    return this.serving ? Status.SERVING : Status.NOT_SERVING;
  }

  /** Whether READINESS_SERVICE may say SERVING (the database answers); watchers hear a change. */
  setReady(ready: boolean): void {
    if (this.ready === ready) return;
    this.ready = ready;
    this.notify();
  }

  setNotServing(): void {
    this.serving = false;
    this.notify();
  }

  private notify(): void {
    for (const notify of [...this.watchers, ...this.listeners]) notify();
  }

  /** Shutdown: NOT_SERVING, and every Watch stream ends after telling its client so. */
  shutDown(): void {
    this.ended = true;
    this.setNotServing();
  }

  get isShutDown(): boolean {
    return this.ended;
  }

  /** Calls `listener` at every status change (and at shutdown) until the returned function is called. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Resolves at the next status change or when the signal aborts. */
  changed(signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.watchers.delete(done);
        signal.removeEventListener("abort", done);
        resolve();
      };
      this.watchers.add(done);
      signal.addEventListener("abort", done);
    });
  }
}

export function createHealthService(state: HealthState): ServiceImpl<typeof Health> {
  return {
    check(req) {
      const status = state.status(req.service);
      // The same text as grpc-health-check's on the grpc-js port.
      if (status === undefined) throw new ConnectError(`Health status unknown for service ${req.service}`, Code.NotFound);
      return { status };
    },
    async *watch(req, ctx) {
      const release = state.admitWatcher();
      if (release instanceof ConnectError) throw release;
      try {
        let last: Status | undefined;
        while (!ctx.signal.aborted) {
          // Read the status again after every yield: it may have changed while the
          // caller was still taking the previous one, before we waited for changes.
          const status = state.status(req.service) ?? Status.SERVICE_UNKNOWN;
          if (status !== last) {
            last = status;
            yield { status };
            continue;
          }
          // Shutting down: the client has heard NOT_SERVING; end the stream so it does not hold the drain.
          if (state.isShutDown) return;
          await state.changed(ctx.signal);
        }
      } finally {
        release();
      }
    },
  };
}
