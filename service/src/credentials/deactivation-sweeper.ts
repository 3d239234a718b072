import type { Logger } from "../logger.js";
import type { CredentialStore } from "./credential-store.js";

/** How often each replica looks for scheduled deactivations that are due (ms). */
export const DEFAULT_DEACTIVATION_SWEEP_MS = 1_000;

/**
 * Carries out scheduled deactivations (the overlap after RollCredential) on every replica, whether or not anyone is
 * signed in: every `intervalMs` it deactivates what is due (CredentialStore.deactivateDue: each row once across
 * replicas, audited and announced). ResolveKey does not wait for it: it stops handing a credential out at its
 * deactivate_at by itself. A failed sweep (the database unreachable) is logged and tried again at the next tick.
 */
export class DeactivationSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly credentials: CredentialStore,
    private readonly logger: Logger,
    private readonly intervalMs = DEFAULT_DEACTIVATION_SWEEP_MS,
  ) {}

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  /** One sweep now; resolves when it is done (never rejects). */
  sweep(): Promise<void> {
    this.running ??= (async () => {
      try {
        const count = await this.credentials.deactivateDue();
        if (count > 0) this.logger.info({ deactivated: count }, `deactivated ${count} credential(s) whose roll overlap ended`);
      } catch (error) {
        this.logger.warn({ err: (error as Error).message }, "scheduled deactivations could not be carried out; retrying");
      } finally {
        this.running = undefined;
      }
    })();
    return this.running;
  }

  /** No further sweeps; waits for one in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private schedule(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.sweep().then(() => this.schedule());
    }, this.intervalMs);
    this.timer.unref();
  }
}
