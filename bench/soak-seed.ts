// Seeds the soak's data through the service's own gRPC API with the admin
// token (never by writing rows: the stored row format is the service's
// business), spreading the calls over both replicas.
import { performance } from "node:perf_hooks";
import type * as grpc from "@grpc/grpc-js";
import { call } from "./clients.js";
import type { ReplicaClients } from "./soak-grpc.js";
import { fakeKey, nextActivation, Pair, patternOf, PROVIDER_ENUM, PROVIDERS, type Cred, type OrgSpec, type Provider } from "./soak-model.js";

export const PROXY_BASE = "https://llm-proxy.soak.example/v1";

export interface SeedSummary {
  organizations: number;
  fixedOrganizations: number;
  mutableOrganizations: number;
  teams: number;
  credentials: number;
  inactiveCredentials: number;
  /** Fixed pairs by what ResolveKey must answer. */
  fixedPairs: { organization: number; environment: number; failedPrecondition: number };
  calls: number;
  seconds: number;
}

export interface CreatedCredential {
  credential_id: string;
  version: number;
  is_active: boolean;
}

/** Runs `fn` over `items` with `concurrency` calls at a time; rejects on the first failure. */
export async function pool<T>(items: T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const i = next++;
      try {
        await fn(items[i], i);
      } catch (error) {
        failed ??= error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  if (failed !== undefined) throw failed;
}

export async function seed(options: {
  replicas: ReplicaClients[];
  admin: grpc.Metadata;
  orgs: OrgSpec[];
  pairs: Map<string, Pair>;
  envKeys: Partial<Record<Provider, string>>;
  log: (line: string) => void;
}): Promise<{ summary: SeedSummary; resolveToken: string }> {
  const { replicas, admin, orgs, pairs, log } = options;
  const started = performance.now();
  let calls = 0;
  const rpc = async <T>(i: number, which: "credentials" | "organizations" | "admin", method: string, request: object): Promise<T> => {
    calls++;
    try {
      return await call<T>(replicas[i % replicas.length][which], method, request, admin, 30_000);
    } catch (error) {
      const e = error as grpc.ServiceError;
      throw new Error(`seeding: ${method} failed: ${e.code !== undefined ? `${e.code} ` : ""}${e.details ?? e.message}`);
    }
  };
  const phase = async <T>(what: string, items: T[], fn: (item: T, index: number) => Promise<void>) => {
    const t = performance.now();
    let done = 0;
    let lastLog = t;
    await pool(items, 16, async (item, i) => {
      await fn(item, i);
      done++;
      if (performance.now() - lastLog > 2_000) {
        lastLog = performance.now();
        log(`seed: ${what} ${done}/${items.length}`);
      }
    });
    log(`seed: ${what}: ${items.length} in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  };

  const token = await rpc<{ token: string }>(0, "admin", "CreateApiToken", { name: `soak-resolve-${Date.now()}`, scope: "resolve" });

  await phase("organisations", orgs, async (org, i) => {
    await rpc(i, "organizations", "CreateOrganization", { organization_id: org.id, name: `Soak ${org.fixed ? "fixed" : "mutable"} ${org.id}` });
  });
  const teams = orgs.flatMap((org) => org.teams.map((team) => ({ team, org: org.id })));
  await phase("teams", teams, async ({ team, org }, i) => {
    await rpc(i, "organizations", "CreateTeam", { team_id: team, organization_id: org, name: `Team ${team}` });
  });

  for (const org of orgs) {
    PROVIDERS.forEach((provider) => {
      pairs.set(pairKey(org.id, provider), new Pair(org.id, provider, org.fixed, options.envKeys[provider]));
    });
  }
  let names = 0;
  const create = async (i: number, org: OrgSpec, provider: Provider, apiBase: string | null): Promise<Cred> => {
    const key = fakeKey(provider);
    const name = `seed-${++names}`;
    const response = await rpc<{ credential: CreatedCredential }>(i, "credentials", "CreateCredential", {
      organization_id: org.id,
      provider: PROVIDER_ENUM[provider],
      credential_name: name,
      api_key: key,
      ...(apiBase ? { api_base: apiBase } : {}),
    });
    const cred: Cred = {
      id: response.credential.credential_id,
      name,
      key,
      apiBase,
      version: response.credential.version,
      active: true,
      activatedSeq: nextActivation(),
    };
    pairs.get(pairKey(org.id, provider))!.creds.push(cred);
    return cred;
  };
  const planned = orgs.flatMap((org, orgIndex) => PROVIDERS.map((provider, p) => ({ org, provider, pattern: patternOf(org, orgIndex, p) })));
  const withFirst = planned.filter((x) => x.pattern !== "none");
  const withSecond = planned.filter((x) => x.pattern === "two_active" || x.pattern === "newer_inactive");
  // Phases, so that a second credential is always activated after the first (ResolveKey serves the most recently activated).
  await phase("credentials", withFirst, async (x, i) => {
    await create(i, x.org, x.provider, x.pattern === "api_base" ? PROXY_BASE : null);
  });
  const toDeactivate: Cred[] = [];
  await phase("second credentials", withSecond, async (x, i) => {
    const cred = await create(i, x.org, x.provider, null);
    if (x.pattern === "newer_inactive") toDeactivate.push(cred);
  });
  await phase("deactivations", toDeactivate, async (cred, i) => {
    const response = await rpc<{ credential: CreatedCredential }>(i, "credentials", "DeactivateCredential", { credential_id: cred.id });
    cred.active = response.credential.is_active;
    cred.version = response.credential.version;
  });

  const fixedPairs = { organization: 0, environment: 0, failedPrecondition: 0 };
  let credentials = 0;
  let inactive = 0;
  for (const pair of pairs.values()) {
    pair.seal();
    credentials += pair.creds.length;
    inactive += pair.creds.filter((c) => !c.active).length;
    if (!pair.fixed) continue;
    const kind = pair.expected().kind;
    if (kind === "organization") fixedPairs.organization++;
    else if (kind === "environment") fixedPairs.environment++;
    else fixedPairs.failedPrecondition++;
  }
  const summary: SeedSummary = {
    organizations: orgs.length,
    fixedOrganizations: orgs.filter((o) => o.fixed).length,
    mutableOrganizations: orgs.filter((o) => !o.fixed).length,
    teams: teams.length,
    credentials,
    inactiveCredentials: inactive,
    fixedPairs,
    calls,
    seconds: (performance.now() - started) / 1000,
  };
  return { summary, resolveToken: token.token };
}

export const pairKey = (organizationId: string, provider: Provider) => `${organizationId}|${provider}`;
