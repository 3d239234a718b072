import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { toJsonString } from "@bufbuild/protobuf";
import {
  CredentialStanding,
  ExplainResolutionResponseSchema,
  FailureKind,
  KeySource,
  Provider,
  SelectionStrategy,
  type ExplainResolutionResponse,
} from "@provider-credentials/wire/gen/credentials_pb";
import { startTestService, FAKE_KEYS, rpcError, type TestService } from "../support/harness.js";

// ExplainResolution answers from ResolveKey's own ranking: every test checks the explanation against what ResolveKey
// actually hands out, never against a re-computation here.

const ENV_OPENAI = `sk-env-${randomBytes(20).toString("base64url")}`;

/** No provider environment variables. */
let t: TestService;
/** OPENAI_API_KEY set. */
let envT: TestService;

beforeAll(async () => {
  [t, envT] = await Promise.all([startTestService(), startTestService({ env: { OPENAI_API_KEY: ENV_OPENAI } })]);
});
afterAll(async () => {
  await Promise.all([t?.close(), envT?.close()]);
});

let seq = 0;
const uniqueId = (label: string) => `${label}-${++seq}-${randomBytes(3).toString("hex")}`;

async function newOrg(svc: TestService = t): Promise<string> {
  const id = uniqueId("org");
  await svc.clients().organizations.createOrganization({ organizationId: id, name: `Org ${id}` });
  return id;
}

async function newCredential(org: string, init: { name?: string; weight?: number; provider?: Provider; svc?: TestService } = {}) {
  const apiKey = init.provider === Provider.ANTHROPIC ? FAKE_KEYS.anthropic() : FAKE_KEYS.openai();
  const { credential } = await (init.svc ?? t).clients().credentials.createCredential({
    organizationId: org,
    provider: init.provider ?? Provider.OPENAI,
    credentialName: init.name ?? uniqueId("cred"),
    apiKey,
    weight: init.weight,
  });
  return { id: credential!.credentialId, apiKey };
}

function explain(org: string, provider: Provider | "all" = Provider.OPENAI, svc = t, token?: string) {
  return svc
    .clients(token)
    .credentials.explainResolution({ scope: { case: "organizationId", value: org }, provider: provider === "all" ? undefined : provider });
}

async function resolvedId(org: string, svc = t): Promise<string | undefined> {
  return (await svc.clients().credentials.resolveKey({ scope: { case: "organizationId", value: org }, provider: Provider.OPENAI })).credentialId;
}

function standingOf(answer: ExplainResolutionResponse, id: string) {
  const found = answer.resolutions[0].credentials.find((c) => c.credentialId === id);
  if (!found) throw new Error(`credential ${id} not in the explanation`);
  return found;
}

describe("ExplainResolution: the live key, from ResolveKey's own selection", () => {
  it("the issue's reproduction: after deactivating and re-activating one key and replacing the other's in place, the key marked in use is the one ResolveKey returns", async () => {
    const org = await newOrg();
    const first = await newCredential(org, { name: "primary" });
    const second = await newCredential(org, { name: "secondary" });
    const c = t.clients().credentials;
    await c.deactivateCredential({ credentialId: first.id });
    await c.activateCredential({ credentialId: first.id });
    await c.updateCredential({ credentialId: second.id, apiKey: FAKE_KEYS.openai() });

    const served = await resolvedId(org);
    expect(served).toBe(first.id);
    const answer = await explain(org);
    const openai = answer.resolutions[0];
    expect(openai.provider).toBe(Provider.OPENAI);
    expect(openai.strategy).toBe(SelectionStrategy.NEWEST);
    expect(openai.source).toBe(KeySource.ORGANIZATION);
    expect(openai.servingCredentialId).toBe(served);
    expect(standingOf(answer, first.id)).toMatchObject({ standing: CredentialStanding.IN_USE, share: 1, credentialName: "primary" });
    expect(standingOf(answer, second.id)).toMatchObject({ standing: CredentialStanding.STANDBY, share: 0, credentialName: "secondary" });
    expect(openai.summary).toContain('"primary"');
  });

  it("newest: the most recently activated is in use, the others standby; an inactive one is marked inactive", async () => {
    const org = await newOrg();
    const a = await newCredential(org);
    const b = await newCredential(org);
    const off = await newCredential(org);
    await t.clients().credentials.deactivateCredential({ credentialId: off.id });
    const answer = await explain(org);
    expect(await resolvedId(org)).toBe(b.id);
    expect(answer.resolutions[0].servingCredentialId).toBe(b.id);
    expect(standingOf(answer, a.id).standing).toBe(CredentialStanding.STANDBY);
    expect(standingOf(answer, off.id).standing).toBe(CredentialStanding.INACTIVE);
    // Active ones first.
    expect(answer.resolutions[0].credentials.map((c) => c.credentialId)).toEqual([b.id, a.id, off.id]);
  });

  it("round robin: each healthy credential a share of 1/n, and ResolveKey hands each out in turn", async () => {
    const org = await newOrg();
    const ids = [];
    for (let i = 0; i < 4; i++) ids.push((await newCredential(org)).id);
    await t.clients().credentials.setSelectionStrategy({ organizationId: org, provider: Provider.OPENAI, strategy: SelectionStrategy.ROUND_ROBIN });
    const answer = await explain(org);
    const openai = answer.resolutions[0];
    expect(openai.strategy).toBe(SelectionStrategy.ROUND_ROBIN);
    expect(openai.servingCredentialId).toBeUndefined();
    for (const id of ids) expect(standingOf(answer, id)).toMatchObject({ standing: CredentialStanding.SHARED, share: 0.25 });
    const handedOut = new Set<string>();
    for (let i = 0; i < 4; i++) handedOut.add((await resolvedId(org))!);
    expect([...handedOut].sort()).toEqual([...ids].sort());
  });

  it("weighted: shares follow the weights; weight 0 is never picked while others have weight", async () => {
    const org = await newOrg();
    const heavy = await newCredential(org, { weight: 3 });
    const light = await newCredential(org, { weight: 1 });
    const zero = await newCredential(org, { weight: 0 });
    await t.clients().credentials.setSelectionStrategy({ organizationId: org, provider: Provider.OPENAI, strategy: SelectionStrategy.WEIGHTED });
    const answer = await explain(org);
    expect(standingOf(answer, heavy.id)).toMatchObject({ standing: CredentialStanding.SHARED, share: 0.75, weight: 3 });
    expect(standingOf(answer, light.id)).toMatchObject({ standing: CredentialStanding.SHARED, share: 0.25, weight: 1 });
    expect(standingOf(answer, zero.id)).toMatchObject({ standing: CredentialStanding.ZERO_WEIGHT, share: 0, weight: 0 });
    for (let i = 0; i < 40; i++) expect(await resolvedId(org)).not.toBe(zero.id);
  });

  it("a failing credential is skipped while a healthy one exists, and handed out (flagged) when none is", async () => {
    const org = await newOrg();
    const older = await newCredential(org);
    const newer = await newCredential(org);
    for (let i = 0; i < 3; i++) await t.clients().credentials.reportKeyFailure({ credentialId: newer.id, kind: FailureKind.AUTHENTICATION });
    let answer = await explain(org);
    expect(await resolvedId(org)).toBe(older.id);
    expect(answer.resolutions[0].servingCredentialId).toBe(older.id);
    expect(standingOf(answer, newer.id).standing).toBe(CredentialStanding.SKIPPED_FAILING);
    expect(standingOf(answer, older.id).standing).toBe(CredentialStanding.IN_USE);
    expect(answer.resolutions[0].summary).toMatch(/1 failing credential is skipped/);

    for (let i = 0; i < 3; i++) await t.clients().credentials.reportKeyFailure({ credentialId: older.id, kind: FailureKind.AUTHENTICATION });
    answer = await explain(org);
    expect(await resolvedId(org)).toBe(answer.resolutions[0].servingCredentialId);
    expect(answer.resolutions[0].summary).toMatch(/every active credential is marked failing/);
  });

  it("says whether an environment fallback exists, never its value", async () => {
    const withEnv = await newOrg(envT);
    const answer = await explain(withEnv, "all", envT);
    const openai = answer.resolutions.find((r) => r.provider === Provider.OPENAI)!;
    expect(openai).toMatchObject({ source: KeySource.ENVIRONMENT, environmentFallback: true, credentials: [] });
    expect(answer.resolutions.find((r) => r.provider === Provider.ANTHROPIC)).toMatchObject({ source: KeySource.UNSPECIFIED, environmentFallback: false });
    expect(toJsonString(ExplainResolutionResponseSchema, answer)).not.toContain(ENV_OPENAI);
    expect(envT.logs.join("\n")).not.toContain(ENV_OPENAI);

    const without = await newOrg();
    const none = (await explain(without)).resolutions[0];
    expect(none).toMatchObject({ source: KeySource.UNSPECIFIED, environmentFallback: false });
    expect(none.summary).toMatch(/FAILED_PRECONDITION/);
    expect((await rpcError(resolvedId(without))).code).toBe(Code.FailedPrecondition);
  });

  it("every provider when none is named, in Provider order; no key in the answer", async () => {
    const org = await newOrg();
    const openai = await newCredential(org);
    const anthropic = await newCredential(org, { provider: Provider.ANTHROPIC });
    const answer = await explain(org, "all");
    expect(answer.organizationId).toBe(org);
    expect(answer.resolutions.map((r) => r.provider)).toEqual([Provider.OPENAI, Provider.ANTHROPIC, Provider.GEMINI, Provider.FIREWORKS]);
    expect(answer.resolutions[1].servingCredentialId).toBe(anthropic.id);
    const json = toJsonString(ExplainResolutionResponseSchema, answer);
    expect(json).not.toContain(openai.apiKey);
    expect(json).not.toContain(anthropic.apiKey);
    expect(standingOf(answer, openai.id).keyHint).toMatch(/…/);
  });

  it("by team: the team's organisation, the same answer", async () => {
    const org = await newOrg();
    const team = uniqueId("team");
    await t.clients().organizations.createTeam({ teamId: team, organizationId: org, name: "Team" });
    const cred = await newCredential(org);
    const answer = await t.clients().credentials.explainResolution({ scope: { case: "teamId", value: team }, provider: Provider.OPENAI });
    expect(answer.organizationId).toBe(org);
    expect(answer.resolutions[0].servingCredentialId).toBe(cred.id);
    const missing = await rpcError(t.clients().credentials.explainResolution({ scope: { case: "teamId", value: "no-such-team" } }));
    expect(missing.code).toBe(Code.NotFound);
  });

  it("bad input names the field; an unknown organisation is NOT_FOUND", async () => {
    const noScope = await rpcError(t.clients().credentials.explainResolution({}));
    expect(noScope).toMatchObject({ code: Code.InvalidArgument });
    expect(noScope.message).toMatch(/scope/);
    const badId = await rpcError(explain("not a valid id!"));
    expect(badId.code).toBe(Code.InvalidArgument);
    expect(badId.message).toMatch(/organization_id/);
    const badProvider = await rpcError(explain(await newOrg(), 99 as Provider));
    expect(badProvider.code).toBe(Code.InvalidArgument);
    expect(badProvider.message).toMatch(/provider/);
    expect((await rpcError(explain("no-such-org"))).code).toBe(Code.NotFound);
  });

  it("a caller limited to organisation A is refused B and a non-existent organisation or team alike", async () => {
    const a = await newOrg();
    const b = await newOrg();
    await newCredential(b);
    const teamB = uniqueId("team");
    await t.clients().organizations.createTeam({ teamId: teamB, organizationId: b, name: "B team" });
    const { token } = await t.service.parts.tokens.create(uniqueId("limited"), "admin", "test", { organizationIds: [a] });
    expect((await explain(a, Provider.OPENAI, t, token)).organizationId).toBe(a);
    const refusedB = await rpcError(explain(b, Provider.OPENAI, t, token));
    const refusedMissing = await rpcError(explain("no-such-org", Provider.OPENAI, t, token));
    expect(refusedB.code).toBe(Code.PermissionDenied);
    expect(refusedMissing.code).toBe(refusedB.code);
    expect(refusedMissing.message.replace("no-such-org", "X")).toBe(refusedB.message.replace(b, "X"));
    const byTeam = (team: string) => t.clients(token).credentials.explainResolution({ scope: { case: "teamId", value: team } });
    const teamRefused = await rpcError(byTeam(teamB));
    const teamMissing = await rpcError(byTeam("no-such-team"));
    expect(teamRefused.code).toBe(Code.PermissionDenied);
    expect(teamMissing.code).toBe(Code.PermissionDenied);
    expect(teamMissing.message.replace("no-such-team", "X")).toBe(teamRefused.message.replace(teamB, "X"));
  });
});
