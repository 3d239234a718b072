// Seeds the benchmark's database in bulk: organisations, teams and credentials
// with real Fernet ciphertext made by the service's keyring, in batches of
// multi-row inserts (unnest of arrays), with progress on the console.
import { randomBytes, randomUUID } from "node:crypto";
import pg from "pg";
import { createKeyring, type Keyring } from "../service/src/keyring/keyring.js";
import { keyHint } from "../service/src/credentials/validation.js";
import { generateToken, hashToken } from "../service/src/auth/tokens.js";
import {
  hasCredentials,
  invalidationOrganizationId,
  LISTING_ORGANIZATION,
  memoryOrganizationId,
  organizationId,
  PROVIDERS,
  SIZES,
  teamId,
  teamOrganization,
  type ProviderDbName,
} from "./workload.js";

const BATCH = 5_000;
const SEEDED_BY = "bench-seed";

export interface InvalidationFixture {
  organizationId: string;
  /** Active and activated earlier: what ResolveKey serves once the newer one is deactivated. */
  olderCredentialId: string;
  /** Active and activated later: what ResolveKey serves first. */
  newerCredentialId: string;
}

export interface SeedResult {
  organizations: number;
  teams: number;
  /** Credentials of the 10,000 organisations (the resolve workload). */
  credentials: number;
  activeCredentials: number;
  inactiveCredentials: number;
  organizationsWithoutCredentials: number;
  /** (organisation, provider) pairs of the 10,000 organisations with no active credential: environment fallback. */
  pairsWithoutActiveCredential: number;
  listingOrganization: string;
  listingCredentials: number;
  /** Organisations used only by the memory fill, one active credential per provider each (absent in results from before them). */
  memoryOrganizations?: number;
  memoryCredentials?: number;
  invalidation: InvalidationFixture[];
  /** A token of scope `resolve` (what LLM gateways use) for the ResolveKey load. */
  resolveToken: string;
  seconds: number;
}

interface CredentialRow {
  id: string;
  organizationId: string;
  provider: ProviderDbName;
  name: string;
  active: boolean;
  createdAt: Date;
}

const KEY_PREFIX: Record<ProviderDbName, string> = { openai: "sk-", anthropic: "sk-ant-", gemini: "AIza", fireworks: "fw_" };

function fakeKey(provider: ProviderDbName): string {
  return `${KEY_PREFIX[provider]}bench${randomBytes(30).toString("base64url")}`;
}

export async function seed(databaseUrl: string, masterKey: string, log: (line: string) => void): Promise<SeedResult> {
  const started = Date.now();
  const keyring = createKeyring(masterKey);
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  try {
    await client.query("set synchronous_commit = off");
    const base = Date.now() - 400 * 24 * 3600 * 1000; // a bit over a year ago

    // Organisations and teams.
    const orgIds = Array.from({ length: SIZES.organizations }, (_, i) => organizationId(i + 1));
    orgIds.push(LISTING_ORGANIZATION);
    for (let i = 0; i < SIZES.invalidationOrganizations; i++) orgIds.push(invalidationOrganizationId(i));
    for (let i = 1; i <= SIZES.memoryOrganizations; i++) orgIds.push(memoryOrganizationId(i));
    await inBatches(orgIds, log, "organisations", (batch) =>
      client.query(
        `insert into organizations (id, name, created_at, updated_at)
         select id, 'Organisation ' || id, $2::timestamptz, $2::timestamptz from unnest($1::text[]) as t(id)`,
        [batch, new Date(base)],
      ),
    );
    const teams = Array.from({ length: SIZES.teams }, (_, i) => i + 1);
    await inBatches(teams, log, "teams", (batch) =>
      client.query(
        `insert into teams (id, organization_id, name, created_at, updated_at)
         select t.id, t.org, 'Team ' || t.id, $3::timestamptz, $3::timestamptz from unnest($1::text[], $2::text[]) as t(id, org)`,
        [batch.map(teamId), batch.map((i) => organizationId(teamOrganization(i))), new Date(base)],
      ),
    );

    // 50,000 credentials over the 9,000 organisations that have any: round r of
    // organisation k is provider (k + r) mod 4, so rounds 0-3 give every
    // organisation one key per provider and rounds 4-5 a second (rotated) one
    // for some. About one in seven is inactive.
    const withCredentials = Array.from({ length: SIZES.organizations }, (_, i) => i + 1).filter(hasCredentials);
    const rows: CredentialRow[] = [];
    for (let k = 0; k < SIZES.credentials; k++) {
      const index = k % withCredentials.length;
      const round = Math.floor(k / withCredentials.length);
      const provider = PROVIDERS[(index + round) % PROVIDERS.length].db;
      rows.push({
        id: randomUUID(),
        organizationId: organizationId(withCredentials[index]),
        provider,
        name: `${provider} key ${round + 1}`,
        active: k % 7 !== 3,
        createdAt: new Date(base + k * 500),
      });
    }
    const activePairs = new Set(rows.filter((r) => r.active).map((r) => `${r.organizationId}|${r.provider}`));

    // The listing organisation: 10,000 credentials, newest first by created_at.
    for (let i = 0; i < SIZES.listingCredentials; i++) {
      const provider = PROVIDERS[i % PROVIDERS.length].db;
      rows.push({
        id: randomUUID(),
        organizationId: LISTING_ORGANIZATION,
        provider,
        name: `listing key ${i + 1}`,
        active: true,
        createdAt: new Date(base + 30 * 24 * 3600 * 1000 + i * 1000),
      });
    }

    // The invalidation organisations: two active OpenAI keys each, the newer activated an hour later.
    const invalidation: InvalidationFixture[] = [];
    for (let i = 0; i < SIZES.invalidationOrganizations; i++) {
      const org = invalidationOrganizationId(i);
      const older = {
        id: randomUUID(),
        organizationId: org,
        provider: "openai" as const,
        name: "older",
        active: true,
        createdAt: new Date(Date.now() - 7_200_000),
      };
      const newer = { ...older, id: randomUUID(), name: "newer", createdAt: new Date(Date.now() - 3_600_000) };
      rows.push(older, newer);
      invalidation.push({ organizationId: org, olderCredentialId: older.id, newerCredentialId: newer.id });
    }

    await insertCredentials(client, keyring, rows, log);

    // The memory-fill organisations: one active key per provider each, activated well before the run.
    const memoryRows: CredentialRow[] = [];
    for (let i = 1; i <= SIZES.memoryOrganizations; i++) {
      for (const [p, { db: provider }] of PROVIDERS.entries()) {
        memoryRows.push({
          id: randomUUID(),
          organizationId: memoryOrganizationId(i),
          provider,
          name: `${provider} memory key`,
          active: true,
          createdAt: new Date(base + 60 * 24 * 3600 * 1000 + (i * PROVIDERS.length + p) * 100),
        });
      }
    }
    await insertCredentials(client, keyring, memoryRows, log, "memory-fill credentials");

    const resolveToken = generateToken();
    await client.query("insert into api_tokens (name, token_hash, scope, created_at, created_by) values ($1, $2, 'resolve', now(), $3)", [
      "bench-resolve",
      hashToken(resolveToken),
      SEEDED_BY,
    ]);

    log("analysing tables");
    await client.query("vacuum analyze organizations, teams, provider_credentials, api_tokens");

    const workloadRows = rows.slice(0, SIZES.credentials);
    const active = workloadRows.filter((r) => r.active).length;
    return {
      organizations: SIZES.organizations,
      teams: SIZES.teams,
      credentials: SIZES.credentials,
      activeCredentials: active,
      inactiveCredentials: SIZES.credentials - active,
      organizationsWithoutCredentials: SIZES.organizations - withCredentials.length,
      pairsWithoutActiveCredential: SIZES.organizations * PROVIDERS.length - activePairs.size,
      listingOrganization: LISTING_ORGANIZATION,
      listingCredentials: SIZES.listingCredentials,
      memoryOrganizations: SIZES.memoryOrganizations,
      memoryCredentials: memoryRows.length,
      invalidation,
      resolveToken,
      seconds: (Date.now() - started) / 1000,
    };
  } finally {
    await client.end();
  }
}

async function insertCredentials(client: pg.Client, keyring: Keyring, rows: CredentialRow[], log: (line: string) => void, what = "credentials"): Promise<void> {
  await inBatches(rows, log, what, (batch) => {
    const columns = {
      id: [] as string[],
      org: [] as string[],
      provider: [] as string[],
      name: [] as string[],
      token: [] as string[],
      keyId: [] as string[],
      binding: [] as string[],
      hint: [] as string[],
      active: [] as boolean[],
      activatedAt: [] as Array<Date | null>,
      createdAt: [] as Date[],
    };
    for (const row of batch) {
      const apiKey = fakeKey(row.provider);
      const { token, keyId, binding } = keyring.encryptBound(apiKey, {
        id: row.id,
        organizationId: row.organizationId,
        provider: row.provider,
        apiBase: null,
      });
      columns.id.push(row.id);
      columns.org.push(row.organizationId);
      columns.provider.push(row.provider);
      columns.name.push(row.name);
      columns.token.push(token);
      columns.keyId.push(keyId);
      columns.binding.push(binding);
      columns.hint.push(keyHint(apiKey, row.provider));
      columns.active.push(row.active);
      columns.activatedAt.push(row.active ? row.createdAt : null);
      columns.createdAt.push(row.createdAt);
    }
    return client.query(
      `insert into provider_credentials
         (id, organization_id, provider, credential_name, encrypted_api_key, key_id, key_binding, key_hint, api_base,
          is_active, activated_at, version, created_at, updated_at, created_by, updated_by)
       select id, org, provider, name, token, key_id, binding, hint, null, active, activated_at, 1, created_at, created_at, $11, $11
       from unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::boolean[], $9::timestamptz[], $10::timestamptz[], $12::text[])
         as t(id, org, provider, name, token, key_id, hint, active, activated_at, created_at, binding)`,
      [
        columns.id,
        columns.org,
        columns.provider,
        columns.name,
        columns.token,
        columns.keyId,
        columns.hint,
        columns.active,
        columns.activatedAt,
        columns.createdAt,
        SEEDED_BY,
        columns.binding,
      ],
    );
  });
}

async function inBatches<T>(items: T[], log: (line: string) => void, what: string, insert: (batch: T[]) => Promise<unknown>): Promise<void> {
  const started = Date.now();
  for (let i = 0; i < items.length; i += BATCH) {
    await insert(items.slice(i, i + BATCH));
    const done = Math.min(i + BATCH, items.length);
    if (done === items.length || (i / BATCH) % 4 === 3) log(`seeding ${what}: ${done.toLocaleString("en")}/${items.length.toLocaleString("en")}`);
  }
  log(`seeded ${items.length.toLocaleString("en")} ${what} in ${((Date.now() - started) / 1000).toFixed(1)} s`);
}
