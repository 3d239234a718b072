// CredentialService.WatchResolutions against the real service: what a caller that caches
// ResolveKey's answers hears, on both ports, across replicas, across a lost notification
// connection, for limited and revoked tokens, and at shutdown.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import pg from "pg";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { toJsonString } from "@bufbuild/protobuf";
import { AdminService } from "@provider-credentials/wire/gen/admin_pb";
import {
  ChangeReason,
  CredentialService,
  FailureKind,
  Provider,
  SelectionStrategy,
  WatchResolutionsResponseSchema,
  type WatchResolutionsResponse,
} from "@provider-credentials/wire/gen/credentials_pb";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { WatchResolutionsRequestSchema } from "@provider-credentials/wire/gen/credentials_pb";
import { createTestDatabase, FAKE_KEYS, rpcError, startTestService, type TestDatabase, type TestService } from "../support/harness.js";

let db: TestDatabase;
let a: TestService;
let b: TestService;
/** Every key created in this file: none may ever appear in an event. */
const keys: string[] = [];

beforeAll(async () => {
  db = await createTestDatabase();
  a = await startTestService({ db, failureThreshold: 2 });
  b = await startTestService({ db, adminToken: a.adminToken, masterKey: a.masterKey, failureThreshold: 2 });
  for (const t of [a, b]) t.service.parts.feed.heartbeatMs = 150;
  const { organizations } = a.clients();
  for (const id of ["w-acme", "w-globex"]) await organizations.createOrganization({ organizationId: id, name: id });
});
afterAll(async () => {
  await b?.close();
  await a?.close();
  await db?.drop();
});

type Message = WatchResolutionsResponse;

/** An open WatchResolutions stream, read in the background. */
interface Watch {
  readonly messages: Message[];
  /** The first message after the last one returned that matches; fails after `timeoutMs`. */
  next(match: (m: Message) => boolean, timeoutMs?: number): Promise<Message>;
  /** How the stream ended (undefined: cleanly), waiting at most `timeoutMs`. */
  ended(timeoutMs?: number): Promise<ConnectError | undefined>;
  close(): void;
}

function watch(transport: Transport, request: MessageInitShape<typeof WatchResolutionsRequestSchema> = {}): Watch {
  const client = createClient(CredentialService, transport);
  const abort = new AbortController();
  const messages: Message[] = [];
  let cursor = 0;
  let error: ConnectError | undefined;
  let done = false;
  const waiters = new Set<() => void>();
  const wake = () => waiters.forEach((w) => w());
  void (async () => {
    try {
      for await (const m of client.watchResolutions(request, { signal: abort.signal })) {
        messages.push(m);
        wake();
      }
    } catch (e) {
      error = ConnectError.from(e);
    } finally {
      done = true;
      wake();
    }
  })();
  const waitFor = <T>(check: () => T | undefined, timeoutMs: number, what: string): Promise<T> =>
    new Promise((resolve, reject) => {
      const test = () => {
        const value = check();
        if (value !== undefined) {
          cleanup();
          resolve(value);
        } else if (done && what !== "end") {
          cleanup();
          reject(new Error(`the stream ended (${error?.message ?? "cleanly"}) before ${what}`));
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`timed out waiting for ${what}; got ${messages.map((m) => m.event.case).join(",")}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(test);
      };
      waiters.add(test);
      test();
    });
  return {
    messages,
    next(match, timeoutMs = 5_000) {
      return waitFor(
        () => {
          for (let i = cursor; i < messages.length; i++) {
            if (match(messages[i])) {
              cursor = i + 1;
              return messages[i];
            }
          }
          return undefined;
        },
        timeoutMs,
        "a matching message",
      );
    },
    ended(timeoutMs = 5_000) {
      return waitFor(() => (done ? { error } : undefined), timeoutMs, "end").then((r) => r.error);
    },
    close: () => abort.abort(),
  };
}

const isSnapshot = (m: Message) => m.event.case === "snapshot";
const changeOf = (m: Message) => (m.event.case === "change" ? m.event.value : undefined);
const changeFor = (organizationId: string, reason?: ChangeReason) => (m: Message) => {
  const c = changeOf(m);
  return c !== undefined && c.organizationId === organizationId && (reason === undefined || c.reason === reason);
};

const PORTS = [
  ["gRPC (grpc-js port)", (t: TestService, token?: string) => t.transport("grpc", token ?? t.adminToken)],
  ["Connect (connect-node port)", (t: TestService, token?: string) => t.transport("connect", token ?? t.adminToken)],
] as const;

describe.each(PORTS)("on %s", (_name, transportOf) => {
  it("starts with a snapshot marker, then heartbeats, each with a resume token", async () => {
    const w = watch(transportOf(a));
    try {
      const first = await w.next(() => true);
      expect(first.event).toEqual({ case: "snapshot", value: expect.objectContaining({ resumed: false }) });
      expect(first.resumeToken).not.toBe("");
      const beat = await w.next((m) => m.event.case === "heartbeat");
      expect(beat.event.case === "heartbeat" && beat.event.value.sentAt).toBeTruthy();
      expect(beat.resumeToken).not.toBe("");
    } finally {
      w.close();
    }
  });

  it("sends one change per kind of change, with its reason, and never a key", async () => {
    const org = `w-kinds-${_name.startsWith("gRPC") ? "g" : "c"}`;
    const { organizations, credentials } = a.clients();
    await organizations.createOrganization({ organizationId: org, name: org });
    await organizations.createTeam({ teamId: `${org}-team`, organizationId: org, name: "T" });
    const w = watch(transportOf(b));
    try {
      await w.next(isSnapshot);
      const apiKey = FAKE_KEYS.openai();
      keys.push(apiKey);
      const { credential } = await credentials.createCredential({ organizationId: org, provider: Provider.OPENAI, credentialName: "k", apiKey });
      const created = changeOf(await w.next(changeFor(org, ChangeReason.CREDENTIAL)))!;
      expect(created).toMatchObject({ all: false, organizationId: org, provider: Provider.OPENAI });
      expect(created.changedAt).toBeTruthy();

      const rotated = FAKE_KEYS.openai();
      keys.push(rotated);
      await credentials.updateCredential({ credentialId: credential!.credentialId, apiKey: rotated });
      await w.next(changeFor(org, ChangeReason.CREDENTIAL));
      await credentials.deactivateCredential({ credentialId: credential!.credentialId });
      await w.next(changeFor(org, ChangeReason.CREDENTIAL));
      await credentials.activateCredential({ credentialId: credential!.credentialId });
      await w.next(changeFor(org, ChangeReason.CREDENTIAL));

      await credentials.setSelectionStrategy({ organizationId: org, provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
      expect(changeOf(await w.next(changeFor(org, ChangeReason.SELECTION_STRATEGY)))).toMatchObject({ provider: Provider.OPENAI });

      // Marked failing at the threshold (2 here), and recovered by a reported success.
      for (let i = 0; i < 2; i++) await credentials.reportKeyFailure({ credentialId: credential!.credentialId, kind: FailureKind.AUTHENTICATION });
      await w.next(changeFor(org, ChangeReason.KEY_HEALTH));
      await credentials.reportKeySuccess({ credentialIds: [credential!.credentialId] });
      await w.next(changeFor(org, ChangeReason.KEY_HEALTH));

      await credentials.deleteCredential({ credentialId: credential!.credentialId });
      await w.next(changeFor(org, ChangeReason.CREDENTIAL));

      await organizations.deleteTeam({ teamId: `${org}-team` });
      const team = changeOf(await w.next(changeFor(org, ChangeReason.TEAM)))!;
      expect(team).toMatchObject({ teamId: `${org}-team`, all: false });
      expect(team.provider).toBeUndefined();

      await organizations.deleteOrganization({ organizationId: org });
      const gone = changeOf(await w.next(changeFor(org, ChangeReason.ORGANIZATION)))!;
      expect(gone.provider).toBeUndefined();

      const wire = w.messages.map((m) => toJsonString(WatchResolutionsResponseSchema, m)).join("\n");
      for (const key of keys) expect(wire).not.toContain(key);
    } finally {
      w.close();
    }
  });

  it("resumes: the changes missed since the token, then snapshot{resumed: true}", async () => {
    const { credentials } = a.clients();
    const w = watch(transportOf(b));
    const snapshot = await w.next(isSnapshot);
    w.close();
    await w.ended();
    // Another stream on B tells when both changes have reached B.
    const probe = watch(transportOf(b));
    await probe.next(isSnapshot);
    const apiKey = FAKE_KEYS.anthropic();
    keys.push(apiKey);
    await credentials.createCredential({ organizationId: "w-acme", provider: Provider.ANTHROPIC, credentialName: `missed-${_name}`, apiKey });
    await credentials.setSelectionStrategy({ organizationId: "w-globex", provider: Provider.GEMINI, strategy: SelectionStrategy.WEIGHTED });
    await probe.next(changeFor("w-globex", ChangeReason.SELECTION_STRATEGY));
    probe.close();

    const again = watch(transportOf(b), { resumeToken: snapshot.resumeToken });
    try {
      const first = await again.next(() => true);
      const second = await again.next(() => true);
      const third = await again.next(() => true);
      expect(changeOf(first)).toMatchObject({ organizationId: "w-acme", reason: ChangeReason.CREDENTIAL, provider: Provider.ANTHROPIC });
      expect(changeOf(second)).toMatchObject({ organizationId: "w-globex", reason: ChangeReason.SELECTION_STRATEGY, provider: Provider.GEMINI });
      expect(third.event).toEqual({ case: "snapshot", value: expect.objectContaining({ resumed: true }) });
    } finally {
      again.close();
    }
  });

  it("does not resume a token of another replica, a made-up one, or none: snapshot{resumed: false}", async () => {
    const onA = watch(transportOf(a));
    const tokenOfA = (await onA.next(isSnapshot)).resumeToken;
    onA.close();
    for (const resumeToken of [tokenOfA, "AAAAAAAAAAAA.1", "garbage", ""]) {
      const w = watch(transportOf(b), { resumeToken });
      try {
        const first = await w.next(() => true);
        expect(first.event).toEqual({ case: "snapshot", value: expect.objectContaining({ resumed: false }) });
      } finally {
        w.close();
      }
    }
    const long = watch(transportOf(b), { resumeToken: "x".repeat(200) });
    const error = await long.ended();
    expect(error?.code).toBe(Code.InvalidArgument);
    expect(error?.rawMessage).toMatch(/^resume_token: /);
  });

  it("limits a limited token to its organisations", async () => {
    const admin = createClient(AdminService, a.transport("grpc", a.adminToken));
    const name = `w-limited-${_name.startsWith("gRPC") ? "g" : "c"}`;
    const { token } = await admin.createApiToken({ name, scope: "resolve", organizationIds: ["w-acme"] });
    const refused = watch(transportOf(b, token), { organizationIds: ["w-globex"] });
    const error = await refused.ended();
    expect(error?.code).toBe(Code.PermissionDenied);
    expect(error?.rawMessage).toContain('organization_ids: "w-globex" is not an organization this caller may access');
    const unknown = await watch(transportOf(b, token), { organizationIds: ["w-nope"] }).ended();
    expect(unknown?.code).toBe(Code.PermissionDenied);

    const w = watch(transportOf(b, token));
    try {
      await w.next(isSnapshot);
      const { credentials, organizations } = a.clients();
      await organizations.createTeam({ teamId: `${name}-g`, organizationId: "w-globex", name: "G" });
      await organizations.deleteTeam({ teamId: `${name}-g` });
      await credentials.setSelectionStrategy({ organizationId: "w-globex", provider: Provider.OPENAI, strategy: SelectionStrategy.NEWEST });
      await organizations.createTeam({ teamId: `${name}-a`, organizationId: "w-acme", name: "A" });
      await organizations.deleteTeam({ teamId: `${name}-a` });
      await credentials.setSelectionStrategy({ organizationId: "w-acme", provider: Provider.OPENAI, strategy: SelectionStrategy.NEWEST });
      await w.next(changeFor("w-acme", ChangeReason.SELECTION_STRATEGY));
      const changes = w.messages.map(changeOf).filter((c) => c !== undefined);
      expect(changes.map((c) => c.organizationId)).toEqual(["w-acme", "w-acme"]);
      expect(changes[0]).toMatchObject({ reason: ChangeReason.TEAM, teamId: `${name}-a` });
    } finally {
      w.close();
    }
    // An unlimited caller may narrow to some organisations.
    const narrowed = watch(transportOf(b), { organizationIds: ["w-globex"] });
    try {
      await narrowed.next(isSnapshot);
      await a.clients().credentials.setSelectionStrategy({ organizationId: "w-acme", provider: Provider.GEMINI, strategy: SelectionStrategy.NEWEST });
      await a.clients().credentials.setSelectionStrategy({ organizationId: "w-globex", provider: Provider.GEMINI, strategy: SelectionStrategy.NEWEST });
      await narrowed.next(changeFor("w-globex"));
      expect(narrowed.messages.map(changeOf).filter((c) => c?.organizationId === "w-acme")).toEqual([]);
    } finally {
      narrowed.close();
    }
  });

  it("ends the stream UNAUTHENTICATED when its token is revoked (on the replica that revoked it, and on another)", async () => {
    const admin = createClient(AdminService, a.transport("grpc", a.adminToken));
    const name = `w-revoked-${_name.startsWith("gRPC") ? "g" : "c"}`;
    const { token } = await admin.createApiToken({ name, scope: "resolve" });
    const onA = watch(transportOf(a, token));
    const onB = watch(transportOf(b, token));
    await onA.next(isSnapshot);
    await onB.next(isSnapshot);
    await admin.revokeApiToken({ name });
    // At once on A (its cache is cleared), within the token cache time (5 s) and a recheck (1 s) on B.
    expect((await onA.ended(3_000))?.code).toBe(Code.Unauthenticated);
    expect((await onB.ended(8_000))?.code).toBe(Code.Unauthenticated);
  });
});

describe("a change through one replica reaches streams on the other", () => {
  it("is applied to the replica's cache before the event is sent", async () => {
    const { credentials } = a.clients();
    const first = FAKE_KEYS.fireworks();
    keys.push(first);
    const { credential } = await credentials.createCredential({ organizationId: "w-acme", provider: Provider.FIREWORKS, credentialName: "fw", apiKey: first });
    const resolveOnB = () => b.clients().credentials.resolveKey({ scope: { case: "organizationId", value: "w-acme" }, provider: Provider.FIREWORKS });
    expect((await resolveOnB()).apiKey).toBe(first); // cached on B now
    const w = watch(b.transport("grpc", b.adminToken));
    try {
      await w.next(isSnapshot);
      const second = FAKE_KEYS.fireworks();
      keys.push(second);
      await credentials.updateCredential({ credentialId: credential!.credentialId, apiKey: second });
      await w.next(changeFor("w-acme", ChangeReason.CREDENTIAL));
      // No polling: the event means B's answer is already the new one.
      expect((await resolveOnB()).apiKey).toBe(second);
    } finally {
      w.close();
    }
  });
});

describe("when a replica's notification connection drops", () => {
  it("ends its streams UNAVAILABLE; once it is back, a resume replays a drop-everything change first", async () => {
    const w = watch(b.transport("grpc", b.adminToken));
    const snapshot = await w.next(isSnapshot);
    // Cut every invalidation listener of this database (both replicas').
    const admin = new pg.Client({ connectionString: db.url });
    await admin.connect();
    try {
      await admin.query(
        "select pg_terminate_backend(pid) from pg_stat_activity where application_name = 'provider-credentials-invalidation' and datname = current_database()",
      );
    } finally {
      await admin.end();
    }
    const error = await w.ended();
    expect(error?.code).toBe(Code.Unavailable);
    expect(error?.rawMessage).toContain("may miss changes");
    // Back within its reconnection backoff (100 ms first).
    let resumed: Watch | undefined;
    await expect
      .poll(
        async () => {
          resumed?.close();
          resumed = watch(b.transport("grpc", b.adminToken), { resumeToken: snapshot.resumeToken });
          return (await resumed.next(() => true).catch(() => undefined))?.event.case;
        },
        { timeout: 5_000, interval: 100 },
      )
      .toBe("change");
    try {
      const all = changeOf(resumed!.messages[0])!;
      expect(all).toMatchObject({ all: true, reason: ChangeReason.ALL, organizationId: "" });
      expect((await resumed!.next(isSnapshot)).event).toEqual({ case: "snapshot", value: expect.objectContaining({ resumed: true }) });
    } finally {
      resumed?.close();
    }
  });
});

describe("bounds and shutdown", () => {
  it("refuses a stream past WATCH_MAX_STREAMS with RESOURCE_EXHAUSTED", async () => {
    const feed = b.service.parts.feed;
    const bound = feed.maxStreams;
    const open = watch(b.transport("grpc", b.adminToken));
    await open.next(isSnapshot);
    feed.maxStreams = feed.streamCount;
    try {
      for (const protocol of ["grpc", "connect"] as const) {
        const error = await watch(b.transport(protocol, b.adminToken)).ended();
        expect(error?.code).toBe(Code.ResourceExhausted);
        expect(error?.rawMessage).toContain("WATCH_MAX_STREAMS");
      }
    } finally {
      feed.maxStreams = bound;
      open.close();
    }
  });

  it("ends every stream at shutdown, without holding the drain", async () => {
    const c = await startTestService({ db, adminToken: a.adminToken, masterKey: a.masterKey });
    const streams = [watch(c.transport("grpc", c.adminToken)), watch(c.transport("connect", c.adminToken))];
    for (const s of streams) await s.next(isSnapshot);
    const started = Date.now();
    await c.close();
    // The drain timeout is 10 s: closing sooner means the streams did not hold it.
    expect(Date.now() - started).toBeLessThan(8_000);
    for (const s of streams) expect((await s.ended())?.code).toBe(Code.Unavailable);
  });

  it("needs a token; a resolve token may watch", async () => {
    const missing = await watch(b.transport("grpc")).ended();
    expect(missing?.code).toBe(Code.Unauthenticated);
    const error = await rpcError(
      (async () => {
        const client: Client<typeof CredentialService> = createClient(CredentialService, b.transport("connect", "pct_not-a-real-token-000000000000000000000"));
        for await (const m of client.watchResolutions({})) void m;
      })(),
    );
    expect(error.code).toBe(Code.Unauthenticated);
  });
});
