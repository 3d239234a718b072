// Concurrent activate, deactivate and delete of one credential, sent to two
// replicas at once: the outcome must be one a sequential order of the same
// calls could produce, the audit log must match it change for change, and once
// a deactivation or deletion has committed the other replica must stop serving
// the key within its invalidation window.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { KeySource, Provider, type Credential } from "@provider-credentials/wire/gen/credentials_pb";
import { createTestDatabase, FAKE_KEYS, startTestService, type TestDatabase, type TestService } from "../support/harness.js";

/** Invalidation reaches the other replica in milliseconds; this is the cap the test allows it. */
const INVALIDATION_WINDOW_MS = 1_000;

let db: TestDatabase;
let a: TestService;
let b: TestService;

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestService({ db });
  b = await startTestService({ db, adminToken: a.adminToken, masterKey: a.masterKey });
});
afterAll(async () => {
  await b?.close();
  await a?.close();
  await db?.drop();
});

type Op = "activate" | "deactivate" | "delete";
interface Outcome {
  op: Op;
  ok: boolean;
  code?: number;
  version?: number;
  isActive?: boolean;
}

function send(t: TestService, op: Op, credentialId: string): Promise<Outcome> {
  const { credentials } = t.clients();
  const done = (credential: Credential | undefined): Outcome => ({ op, ok: true, version: credential?.version, isActive: credential?.isActive });
  const call =
    op === "activate"
      ? credentials.activateCredential({ credentialId }).then((r) => done(r.credential))
      : op === "deactivate"
        ? credentials.deactivateCredential({ credentialId }).then((r) => done(r.credential))
        : credentials.deleteCredential({ credentialId }).then(() => ({ op, ok: true }) as Outcome);
  return call.catch((error: { code?: number }) => ({ op, ok: false, code: error.code }));
}

/** A fixed, varied mix of 30 calls per round (a small LCG: the same on every run). */
function mix(round: number): Op[] {
  let seed = 7 + round * 7919;
  // The high bits: an LCG's low bits are far from random.
  const next = () => (seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31) >>> 16;
  const deletes = round % 3 === 2 ? 0 : 1 + (round % 3); // some rounds without a delete
  const ops: Op[] = Array.from({ length: 30 - deletes }, () => (next() % 2 === 0 ? "activate" : "deactivate"));
  for (let i = 0; i < deletes; i++) ops.splice(next() % (ops.length + 1), 0, "delete");
  return ops;
}

/**
 * Replays the outcomes in an order a single caller could have sent them and
 * checks that each one gets exactly the answer it got: successes by the version
 * they saw (the change that made a version before the calls that merely saw
 * it), then the delete, then everything that found nothing.
 */
function replaySequentially(outcomes: Outcome[], auditActions: string[]): void {
  const changes = auditActions.filter((x) => x !== "credential.delete");
  const pending = [...outcomes];
  const order: Outcome[] = [];
  const take = (pick: (o: Outcome) => boolean) => {
    const i = pending.findIndex(pick);
    if (i >= 0) order.push(...pending.splice(i, 1));
    return i >= 0;
  };
  for (let version = 1; version <= changes.length + 1; version++) {
    if (version > 1) {
      const op = changes[version - 2] === "credential.activate" ? "activate" : "deactivate";
      expect(
        take((o) => o.ok && o.op === op && o.version === version),
        `the call that made version ${version}`,
      ).toBe(true);
    }
    while (take((o) => o.ok && o.op !== "delete" && o.version === version));
  }
  take((o) => o.ok && o.op === "delete");
  while (take((o) => !o.ok));
  expect(pending, "outcomes no sequential order explains").toEqual([]);

  const state = { exists: true, active: true, version: 1 };
  for (const o of order) {
    if (!state.exists) {
      expect(o).toEqual({ op: o.op, ok: false, code: Code.NotFound });
      continue;
    }
    if (o.op === "delete") {
      state.exists = false;
      expect(o).toEqual({ op: "delete", ok: true });
      continue;
    }
    const active = o.op === "activate";
    if (state.active !== active) {
      state.active = active;
      state.version++;
    }
    expect(o).toEqual({ op: o.op, ok: true, version: state.version, isActive: state.active });
  }
}

const resolveOn = (t: TestService, organizationId: string) =>
  t.clients().credentials.resolveKey({ scope: { case: "organizationId", value: organizationId }, provider: Provider.OPENAI });

/** Polls until `check` passes, for at most `capMs`; returns how long it took. */
async function within(capMs: number, what: string, check: () => Promise<boolean>): Promise<number> {
  const started = Date.now();
  for (;;) {
    if (await check()) return Date.now() - started;
    if (Date.now() - started > capMs) throw new Error(`${what}: not within ${capMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** True when the replica no longer hands out `apiKey` for the organisation (FAILED_PRECONDITION: no key left). */
async function stoppedServing(t: TestService, organizationId: string, apiKey: string): Promise<boolean> {
  try {
    return (await resolveOn(t, organizationId)).apiKey !== apiKey;
  } catch (error) {
    expect((error as { code?: number }).code).toBe(Code.FailedPrecondition);
    return true;
  }
}

describe("concurrent activate, deactivate and delete of one credential", () => {
  it("leaves only states a sequential order produces, audited change for change, on 8 rounds of 30 calls over two replicas", { timeout: 120_000 }, async () => {
    const { organizations, credentials } = a.clients();
    for (let round = 0; round < 8; round++) {
      const organizationId = `race-org-${round}`;
      await organizations.createOrganization({ organizationId, name: `Race ${round}` });
      const apiKey = FAKE_KEYS.openai();
      const { credential } = await credentials.createCredential({ organizationId, provider: Provider.OPENAI, credentialName: "raced", apiKey });
      const id = credential!.credentialId;
      // Replica B has the key cached before the race starts.
      expect((await resolveOn(b, organizationId)).apiKey).toBe(apiKey);

      const ops = mix(round);
      const outcomes = await Promise.all(ops.map((op, i) => send(i % 2 === 0 ? a : b, op, id)));

      const deleted = outcomes.some((o) => o.op === "delete" && o.ok);
      // Failures are NOT_FOUND, and only after a delete; exactly one of the deletes wins.
      expect(outcomes.filter((o) => !o.ok && o.code !== Code.NotFound)).toEqual([]);
      if (!deleted) expect(outcomes.filter((o) => !o.ok)).toEqual([]);
      expect(outcomes.filter((o) => o.op === "delete" && o.ok).length).toBe(ops.includes("delete") ? 1 : 0);

      // The audit log is the history: alternating changes from active, at most one delete, last.
      const audit = await db.query<{ action: string }>(
        "select action from audit_events where credential_id = $1 and action <> 'credential.create' order by id",
        [id],
      );
      const actions = audit.map((r) => r.action);
      const changes = actions.filter((x) => x !== "credential.delete");
      changes.forEach((action, i) => expect(action).toBe(i % 2 === 0 ? "credential.deactivate" : "credential.activate"));
      expect(actions.filter((x) => x === "credential.delete").length).toBe(deleted ? 1 : 0);
      if (deleted) expect(actions[actions.length - 1]).toBe("credential.delete");

      // The row: version is 1 + the number of effective changes, and the state is the last change's.
      const rows = await db.query<{ version: number; is_active: boolean }>("select version, is_active from provider_credentials where id = $1", [id]);
      if (deleted) expect(rows).toEqual([]);
      else expect(rows).toEqual([{ version: 1 + changes.length, is_active: changes.length % 2 === 0 }]);

      replaySequentially(outcomes, actions);

      // After a committed delete nothing succeeds any more, on either replica.
      if (deleted) {
        for (const t of [a, b]) {
          for (const op of ["activate", "deactivate", "delete"] as const) expect(await send(t, op, id)).toEqual({ op, ok: false, code: Code.NotFound });
        }
      }

      // Replica B follows the final state within its invalidation window.
      if (deleted || changes.length % 2 === 1) {
        await within(INVALIDATION_WINDOW_MS, `round ${round}: replica B stops serving the key`, () => stoppedServing(b, organizationId, apiKey));
      } else {
        expect((await resolveOn(b, organizationId)).apiKey).toBe(apiKey);
      }
    }
  });
});

describe("a committed deactivation or deletion reaches the other replica", () => {
  for (const change of ["deactivate", "delete"] as const) {
    it(`${change}: replica B, under resolve load, stops serving the key within its invalidation window and never serves it again`, async () => {
      const { organizations, credentials } = a.clients();
      const organizationId = `window-${change}`;
      await organizations.createOrganization({ organizationId, name: change });
      // An older active key: what B must fall back to once the newer one is gone.
      const olderKey = FAKE_KEYS.openai();
      await credentials.createCredential({ organizationId, provider: Provider.OPENAI, credentialName: "older", apiKey: olderKey });
      const apiKey = FAKE_KEYS.openai();
      const { credential } = await credentials.createCredential({ organizationId, provider: Provider.OPENAI, credentialName: "newer", apiKey });
      await within(INVALIDATION_WINDOW_MS, "replica B serves the newer key", async () => (await resolveOn(b, organizationId)).apiKey === apiKey);

      // Steady resolve load on B throughout, so that loads race with the invalidation.
      const seen: Array<{ start: number; apiKey: string }> = [];
      let running = true;
      const load = Promise.all(
        Array.from({ length: 3 }, async () => {
          while (running) {
            const start = Date.now();
            const r = await resolveOn(b, organizationId);
            seen.push({ start, apiKey: r.apiKey });
          }
        }),
      );
      try {
        await new Promise((r) => setTimeout(r, 100));
        if (change === "deactivate") await credentials.deactivateCredential({ credentialId: credential!.credentialId });
        else await credentials.deleteCredential({ credentialId: credential!.credentialId });
        const committed = Date.now();
        const tookMs = await within(INVALIDATION_WINDOW_MS, `replica B stops serving the key after ${change}`, () => stoppedServing(b, organizationId, apiKey));
        const stopped = committed + tookMs;
        await new Promise((r) => setTimeout(r, 300));
        running = false;
        await load;
        // Once B answered with the older key, no later call got the newer one back (no stale load was cached).
        const late = seen.filter((s) => s.start > stopped);
        expect(late.length).toBeGreaterThan(0);
        expect(late.filter((s) => s.apiKey !== olderKey)).toEqual([]);
        const r = await resolveOn(b, organizationId);
        expect(r.apiKey).toBe(olderKey);
        expect(r.source).toBe(KeySource.ORGANIZATION);
      } finally {
        running = false;
        await load.catch(() => undefined);
      }
    });
  }
});
