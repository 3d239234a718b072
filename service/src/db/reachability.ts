import { DB_HOT_PATH_TIMEOUT_MS } from "./orm.js";

/**
 * Whether the hot path's last look-up found PostgreSQL unreachable, shared by
 * the token store and the resolver. While a failure is recent (one statement
 * timeout), what can be answered from the outage grace window is answered at
 * once instead of waiting on the database again: a call that first looks up
 * its token and then its key would otherwise wait out two statement timeouts
 * against a frozen server. Calls that need the database still try it, and the
 * first success clears the state.
 */
export class Reachability {
  private failedAt = 0;

  constructor(private readonly windowMs = DB_HOT_PATH_TIMEOUT_MS) {}

  /** The database was found unreachable (a hot-path statement timed out or could not connect). */
  unreachable(now = Date.now()): void {
    this.failedAt = now;
  }

  /** A hot-path statement succeeded. */
  reachable(): void {
    this.failedAt = 0;
  }

  /** Found unreachable within the last window, with no success since. */
  recentlyUnreachable(now = Date.now()): boolean {
    return this.failedAt !== 0 && now - this.failedAt < this.windowMs;
  }
}
