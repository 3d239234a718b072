import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createTestDatabase, startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";
import { createKeyring, generateMasterKey } from "../../service/src/keyring/keyring.js";
import { TokenStore } from "../../service/src/auth/token-store.js";
import { CredentialService, KeySource, Provider } from "@provider-credentials/wire/gen/credentials_pb";

const ENV = {
  OPENAI_API_KEY: `sk-env-${randomBytes(20).toString("base64url")}`,
  GOOGLE_API_KEY: `AIza-env-${randomBytes(20).toString("base64url")}`,
};

/** No provider environment variables: no fallback. */
let t: TestService;
/** OPENAI_API_KEY and GOOGLE_API_KEY set. */
let envT: TestService;

beforeAll(async () => {
  [t, envT] = await Promise.all([startTestService(), startTestService({ env: { ...ENV } })]);
});
afterAll(async () => {
  await Promise.all([t?.close(), envT?.close()]);
});

type Scope = { case: "organizationId"; value: string } | { case: "teamId"; value: string };
const byOrg = (value: string): Scope => ({ case: "organizationId", value });
const byTeam = (value: string): Scope => ({ case: "teamId", value });

let seq = 0;
const uniqueId = (label: string) => `${label}-${++seq}-${randomBytes(3).toString("hex")}`;

async function newOrg(svc: TestService): Promise<string> {
  const id = uniqueId("org");
  await svc.clients().organizations.createOrganization({ organizationId: id, name: `Org ${id}` });
  return id;
}

async function newTeam(svc: TestService, organizationId: string): Promise<string> {
  const id = uniqueId("team");
  await svc.clients().organizations.createTeam({ teamId: id, organizationId, name: `Team ${id}` });
  return id;
}

async function createCredential(
  svc: TestService,
  organizationId: string,
  init: { provider?: Provider; apiKey?: string; apiBase?: string; credentialName?: string } = {},
) {
  const apiKey = init.apiKey ?? FAKE_KEYS.openai();
  const { credential } = await svc.clients().credentials.createCredential({
    organizationId,
    provider: init.provider ?? Provider.OPENAI,
    credentialName: init.credentialName ?? uniqueId("cred"),
    apiKey,
    apiBase: init.apiBase,
  });
  if (!credential) throw new Error("CreateCredential returned no credential");
  return { id: credential.credentialId, apiKey };
}

function resolve(svc: TestService, scope: Scope, provider = Provider.OPENAI, token?: string) {
  return svc.clients(token).credentials.resolveKey({ scope, provider });
}

describe("resolution from stored credentials", () => {
  it("resolves by organisation: key, api_base, source ORGANIZATION, credential and organisation ids", async () => {
    const org = await newOrg(t);
    const { id, apiKey } = await createCredential(t, org, { apiBase: "https://proxy.example.com/v1" });
    const resolved = await resolve(t, byOrg(org));
    expect(resolved.apiKey).toBe(apiKey);
    expect(resolved.apiBase).toBe("https://proxy.example.com/v1");
    expect(resolved.source).toBe(KeySource.ORGANIZATION);
    expect(resolved.credentialId).toBe(id);
    expect(resolved.organizationId).toBe(org);
  });

  it("leaves api_base unset when the credential has none", async () => {
    const org = await newOrg(t);
    const { apiKey } = await createCredential(t, org);
    const resolved = await resolve(t, byOrg(org));
    expect(resolved.apiKey).toBe(apiKey);
    expect(resolved.apiBase).toBeUndefined();
  });

  it("resolves by team to the team's organisation's credential", async () => {
    const org = await newOrg(t);
    const team = await newTeam(t, org);
    const { id, apiKey } = await createCredential(t, org, { apiBase: "https://proxy.example.com" });
    const resolved = await resolve(t, byTeam(team));
    expect(resolved.apiKey).toBe(apiKey);
    expect(resolved.apiBase).toBe("https://proxy.example.com");
    expect(resolved.source).toBe(KeySource.ORGANIZATION);
    expect(resolved.credentialId).toBe(id);
    expect(resolved.organizationId).toBe(org);
  });

  it("resolves each provider to its own credential, and never another organisation's", async () => {
    const org = await newOrg(t);
    const other = await newOrg(t);
    const keys = {
      [Provider.OPENAI]: (await createCredential(t, org)).apiKey,
      [Provider.ANTHROPIC]: (await createCredential(t, org, { provider: Provider.ANTHROPIC, apiKey: FAKE_KEYS.anthropic() })).apiKey,
      [Provider.GEMINI]: (await createCredential(t, org, { provider: Provider.GEMINI, apiKey: FAKE_KEYS.gemini() })).apiKey,
      [Provider.FIREWORKS]: (await createCredential(t, org, { provider: Provider.FIREWORKS, apiKey: FAKE_KEYS.fireworks() })).apiKey,
    };
    await createCredential(t, other);
    for (const [provider, key] of Object.entries(keys)) {
      expect((await resolve(t, byOrg(org), Number(provider) as Provider)).apiKey).toBe(key);
    }
    expect((await resolve(t, byOrg(other))).apiKey).not.toBe(keys[Provider.OPENAI]);
    // The other organisation has no Anthropic key, and gets none of this one's.
    const err = await rpcError(resolve(t, byOrg(other), Provider.ANTHROPIC));
    expect(err.code).toBe(Code.FailedPrecondition);
  });

  it("hands out the most recently activated of several active credentials", async () => {
    const org = await newOrg(envT);
    const { credentials } = envT.clients();
    const a = await createCredential(envT, org, { credentialName: "A" });
    await sleep(3);
    const b = await createCredential(envT, org, { credentialName: "B" });
    expect((await resolve(envT, byOrg(org))).credentialId).toBe(b.id);

    await credentials.deactivateCredential({ credentialId: b.id });
    const onlyA = await resolve(envT, byOrg(org));
    expect(onlyA.credentialId).toBe(a.id);
    expect(onlyA.apiKey).toBe(a.apiKey);

    await sleep(3);
    await credentials.activateCredential({ credentialId: b.id });
    const bAgain = await resolve(envT, byOrg(org));
    expect(bAgain.credentialId).toBe(b.id);
    expect(bAgain.apiKey).toBe(b.apiKey);

    // Re-activating an active credential changes nothing: B stays preferred.
    await credentials.activateCredential({ credentialId: a.id });
    expect((await resolve(envT, byOrg(org))).credentialId).toBe(b.id);

    await credentials.deactivateCredential({ credentialId: a.id });
    await credentials.deactivateCredential({ credentialId: b.id });
    const fallback = await resolve(envT, byOrg(org));
    expect(fallback.source).toBe(KeySource.ENVIRONMENT);
    expect(fallback.apiKey).toBe(ENV.OPENAI_API_KEY);
    expect(fallback.credentialId).toBeUndefined();

    await sleep(3);
    await credentials.activateCredential({ credentialId: a.id });
    expect((await resolve(envT, byOrg(org))).credentialId).toBe(a.id);
  });

  it("serves a rotated key at once", async () => {
    const org = await newOrg(t);
    const { id } = await createCredential(t, org);
    const rotated = FAKE_KEYS.openai();
    await t.clients().credentials.updateCredential({ credentialId: id, apiKey: rotated });
    expect((await resolve(t, byOrg(org))).apiKey).toBe(rotated);
  });

  it("no longer serves a deactivated credential", async () => {
    const org = await newOrg(t);
    const { id } = await createCredential(t, org);
    await t.clients().credentials.deactivateCredential({ credentialId: id });
    const err = await rpcError(resolve(t, byOrg(org)));
    expect(err.code).toBe(Code.FailedPrecondition);
  });

  it("no longer serves a deleted credential, falling back to the next active one", async () => {
    const org = await newOrg(t);
    const a = await createCredential(t, org);
    await sleep(3);
    const b = await createCredential(t, org);
    expect((await resolve(t, byOrg(org))).credentialId).toBe(b.id);
    await t.clients().credentials.deleteCredential({ credentialId: b.id });
    expect((await resolve(t, byOrg(org))).credentialId).toBe(a.id);
    await t.clients().credentials.deleteCredential({ credentialId: a.id });
    const err = await rpcError(resolve(t, byOrg(org)));
    expect(err.code).toBe(Code.FailedPrecondition);
  });
});

describe("environment fallback", () => {
  it("serves OPENAI_API_KEY when the organisation has no active OpenAI credential", async () => {
    const org = await newOrg(envT);
    // A credential for another provider does not count.
    await createCredential(envT, org, { provider: Provider.ANTHROPIC, apiKey: FAKE_KEYS.anthropic() });
    const resolved = await resolve(envT, byOrg(org));
    expect(resolved.apiKey).toBe(ENV.OPENAI_API_KEY);
    expect(resolved.source).toBe(KeySource.ENVIRONMENT);
    expect(resolved.credentialId).toBeUndefined();
    expect(resolved.apiBase).toBeUndefined();
    expect(resolved.organizationId).toBe(org);
  });

  it("serves the fallback for a team too, naming the team's organisation", async () => {
    const org = await newOrg(envT);
    const team = await newTeam(envT, org);
    const resolved = await resolve(envT, byTeam(team));
    expect(resolved.apiKey).toBe(ENV.OPENAI_API_KEY);
    expect(resolved.source).toBe(KeySource.ENVIRONMENT);
    expect(resolved.organizationId).toBe(org);
  });

  it("falls back to GOOGLE_API_KEY for Gemini when GEMINI_API_KEY is unset", async () => {
    const org = await newOrg(envT);
    const resolved = await resolve(envT, byOrg(org), Provider.GEMINI);
    expect(resolved.apiKey).toBe(ENV.GOOGLE_API_KEY);
    expect(resolved.source).toBe(KeySource.ENVIRONMENT);
    expect(resolved.credentialId).toBeUndefined();
  });

  it("prefers an active stored credential to the environment", async () => {
    const org = await newOrg(envT);
    const { id, apiKey } = await createCredential(envT, org);
    const resolved = await resolve(envT, byOrg(org));
    expect(resolved.apiKey).toBe(apiKey);
    expect(resolved.source).toBe(KeySource.ORGANIZATION);
    expect(resolved.credentialId).toBe(id);
  });

  it("refuses a provider whose variable is not set, even with others set", async () => {
    const org = await newOrg(envT);
    const err = await rpcError(resolve(envT, byOrg(org), Provider.ANTHROPIC));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.message).toContain("ANTHROPIC_API_KEY");
  });

  it("prefers GEMINI_API_KEY to GOOGLE_API_KEY, trims values, and treats blank values as unset", async () => {
    const gemini = `AIza-gemini-${randomBytes(12).toString("base64url")}`;
    const svc = await startTestService({
      env: { GEMINI_API_KEY: `  ${gemini}\n`, GOOGLE_API_KEY: ENV.GOOGLE_API_KEY, ANTHROPIC_API_KEY: "   " },
    });
    try {
      const org = await newOrg(svc);
      const resolved = await resolve(svc, byOrg(org), Provider.GEMINI);
      expect(resolved.apiKey).toBe(gemini);
      expect(resolved.source).toBe(KeySource.ENVIRONMENT);
      const err = await rpcError(resolve(svc, byOrg(org), Provider.ANTHROPIC));
      expect(err.code).toBe(Code.FailedPrecondition);
    } finally {
      await svc.close();
    }
  });
});

describe("errors", () => {
  it.each([
    [Provider.OPENAI, "OpenAI", ["OPENAI_API_KEY"]],
    [Provider.ANTHROPIC, "Anthropic", ["ANTHROPIC_API_KEY"]],
    [Provider.GEMINI, "Google Gemini", ["GEMINI_API_KEY", "GOOGLE_API_KEY"]],
    [Provider.FIREWORKS, "Fireworks AI", ["FIREWORKS_API_KEY"]],
  ] as const)("answers FAILED_PRECONDITION naming the organisation, %s's label and variable when there is no key at all", async (provider, label, vars) => {
    const org = await newOrg(t);
    const team = await newTeam(t, org);
    for (const scope of [byOrg(org), byTeam(team)]) {
      const err = await rpcError(resolve(t, scope, provider));
      expect(err.code).toBe(Code.FailedPrecondition);
      expect(err.message).toContain(org);
      expect(err.message).toContain(label);
      for (const v of vars) expect(err.message).toContain(v);
    }
  });

  it("answers NOT_FOUND for an unknown organisation or team, naming it", async () => {
    const org = await rpcError(resolve(envT, byOrg("no-such-org")));
    expect(org.code).toBe(Code.NotFound);
    expect(org.message).toContain("no-such-org");
    // Even with an environment fallback configured: an unknown scope is not served.
    const team = await rpcError(resolve(envT, byTeam("no-such-team")));
    expect(team.code).toBe(Code.NotFound);
    expect(team.message).toContain("no-such-team");
  });

  it("answers NOT_FOUND for a deleted team", async () => {
    const org = await newOrg(t);
    const team = await newTeam(t, org);
    await createCredential(t, org);
    await resolve(t, byTeam(team));
    await t.clients().organizations.deleteTeam({ teamId: team });
    const err = await rpcError(resolve(t, byTeam(team)));
    expect(err.code).toBe(Code.NotFound);
  });

  it.each([
    ["no scope", { case: undefined }, Provider.OPENAI, "scope"],
    ["provider unspecified", byOrg("any-org"), Provider.UNSPECIFIED, "provider"],
    ["an empty organisation id", byOrg(""), Provider.OPENAI, "organization_id"],
    ["bad organisation id characters", byOrg("org/../x"), Provider.OPENAI, "organization_id"],
    ["an empty team id", byTeam(""), Provider.OPENAI, "team_id"],
    ["bad team id characters", byTeam("team one"), Provider.OPENAI, "team_id"],
    ["a team id of 65 characters", byTeam("t".repeat(65)), Provider.OPENAI, "team_id"],
  ] as const)("refuses %s with INVALID_ARGUMENT naming the field", async (_label, scope, provider, field) => {
    const err = await rpcError(envT.clients().credentials.resolveKey({ scope, provider }));
    expect(err.code, err.message).toBe(Code.InvalidArgument);
    expect(err.message.startsWith(`${field}: `), err.message).toBe(true);
  });

  it("answers DATA_LOSS for a key stored under another master key, never falling back to the environment or leaking a key", async () => {
    const org = await newOrg(envT);
    const team = await newTeam(envT, org);
    const { id, apiKey } = await createCredential(envT, org);
    const foreignKey = FAKE_KEYS.openai();
    const { token: foreign } = createKeyring(generateMasterKey()).encrypt(foreignKey);
    await envT.db.query("update provider_credentials set encrypted_api_key = $1 where id = $2", [foreign, id]);

    for (const scope of [byOrg(org), byTeam(team)]) {
      const err = await rpcError(resolve(envT, scope));
      expect(err.code, err.message).toBe(Code.DataLoss);
      expect(err.message).toContain(id);
      for (const secret of [apiKey, foreignKey, ENV.OPENAI_API_KEY, foreign, envT.masterKey]) expect(err.message).not.toContain(secret);
    }
    for (const line of envT.logs) for (const secret of [apiKey, foreignKey, foreign]) expect(line).not.toContain(secret);
    // The credential is kept; deactivating it lets the environment key through again.
    await envT.clients().credentials.deactivateCredential({ credentialId: id });
    expect((await resolve(envT, byOrg(org))).source).toBe(KeySource.ENVIRONMENT);
  });
});

describe("resolve-scope tokens", () => {
  it("may resolve keys, by organisation and by team, but call nothing else", async () => {
    const { token } = await new TokenStore(t.service.orm).create(uniqueId("gateway"), "resolve", "test");
    const org = await newOrg(t);
    const team = await newTeam(t, org);
    const { id, apiKey } = await createCredential(t, org);
    const byOrgResolved = await resolve(t, byOrg(org), Provider.OPENAI, token);
    expect(byOrgResolved.apiKey).toBe(apiKey);
    expect(byOrgResolved.credentialId).toBe(id);
    expect((await resolve(t, byTeam(team), Provider.OPENAI, token)).apiKey).toBe(apiKey);

    const gateway = t.clients(token);
    for (const call of [
      () => gateway.credentials.getCredential({ credentialId: id }),
      () => gateway.credentials.listCredentials({ organizationId: org }),
      () => gateway.credentials.createCredential({ organizationId: org, provider: Provider.OPENAI, credentialName: "x", apiKey: FAKE_KEYS.openai() }),
      () => gateway.credentials.deactivateCredential({ credentialId: id }),
      () => gateway.organizations.listOrganizations({}),
    ]) {
      const err = await rpcError(call());
      expect(err.code).toBe(Code.PermissionDenied);
    }
    expect((await resolve(t, byOrg(org))).credentialId).toBe(id);
  });
});

describe("usage", () => {
  it("records last_used_at for a resolved credential (written in batches, at the latest on shutdown)", async () => {
    const db = await createTestDatabase();
    try {
      const masterKey = generateMasterKey();
      const svc = await startTestService({ db, masterKey, env: { OPENAI_API_KEY: ENV.OPENAI_API_KEY } });
      let used: string;
      let unused: string;
      const before = new Date();
      try {
        const org = await newOrg(svc);
        const other = await newOrg(svc);
        unused = (await createCredential(svc, org, { provider: Provider.ANTHROPIC, apiKey: FAKE_KEYS.anthropic() })).id;
        used = (await createCredential(svc, org)).id;
        await resolve(svc, byOrg(org));
        await resolve(svc, byOrg(org));
        // An environment fallback uses no credential.
        expect((await resolve(svc, byOrg(other))).source).toBe(KeySource.ENVIRONMENT);
      } finally {
        await svc.close(); // flushes the pending usage
      }
      const after = new Date();
      const rows = await db.query<{ id: string; last_used_at: Date | null }>("select id, last_used_at from provider_credentials");
      const byId = new Map(rows.map((r) => [r.id, r.last_used_at]));
      expect(rows).toHaveLength(2);
      expect(byId.get(unused)).toBeNull();
      const lastUsed = byId.get(used);
      expect(lastUsed).toBeInstanceOf(Date);
      expect(lastUsed!.getTime()).toBeGreaterThanOrEqual(before.getTime() - 1000);
      expect(lastUsed!.getTime()).toBeLessThanOrEqual(after.getTime() + 1000);

      // Administrators see it through the API.
      const again = await startTestService({ db, masterKey });
      try {
        const { credential } = await again.clients().credentials.getCredential({ credentialId: used });
        expect(credential?.lastUsedAt).toBeDefined();
        expect(timestampDate(credential!.lastUsedAt!).getTime()).toBe(lastUsed!.getTime());
        expect(credential?.version).toBe(1);
        const { credential: notUsed } = await again.clients().credentials.getCredential({ credentialId: unused });
        expect(notUsed?.lastUsedAt).toBeUndefined();
      } finally {
        await again.close();
      }
    } finally {
      await db.drop();
    }
  });
});

describe("protocols", () => {
  it.each(["connect", "grpc-web", "grpc"] as const)("resolves the same way over %s", async (protocol) => {
    const org = await newOrg(t);
    const team = await newTeam(t, org);
    const { id, apiKey } = await createCredential(t, org, { apiBase: "https://proxy.example.com" });
    const client = createClient(CredentialService, t.transport(protocol, t.adminToken));
    for (const scope of [byOrg(org), byTeam(team)]) {
      const resolved = await client.resolveKey({ scope, provider: Provider.OPENAI });
      expect(resolved.apiKey).toBe(apiKey);
      expect(resolved.apiBase).toBe("https://proxy.example.com");
      expect(resolved.source).toBe(KeySource.ORGANIZATION);
      expect(resolved.credentialId).toBe(id);
      expect(resolved.organizationId).toBe(org);
    }
    const notFound = await rpcError(client.resolveKey({ scope: byOrg("no-such-org"), provider: Provider.OPENAI }));
    expect(notFound.code).toBe(Code.NotFound);
    const invalid = await rpcError(client.resolveKey({ scope: byTeam("bad team"), provider: Provider.OPENAI }));
    expect(invalid.code).toBe(Code.InvalidArgument);
    expect(invalid.message.startsWith("team_id: ")).toBe(true);
    const other = await newOrg(t);
    const missing = await rpcError(client.resolveKey({ scope: byOrg(other), provider: Provider.OPENAI }));
    expect(missing.code).toBe(Code.FailedPrecondition);
    expect(missing.message).toContain("OPENAI_API_KEY");
  });
});
