// Imports organisations, teams and provider credentials from a SaaS LiteLLM
// database (see legacy-source.ts). Every key is decrypted with the legacy key
// and re-encrypted under MASTER_KEY, bound to its row, in batches, each in its
// own transaction with its audit rows and cache invalidations. Rows already
// here (same id) are left alone, so a rerun changes nothing. Nothing here ever
// returns or logs a key or a token.
import type { EntityManager } from "@mikro-orm/postgresql";
import type { Orm } from "../db/orm.js";
import { runChange } from "../db/change.js";
import { stillNamedIds } from "../organizations/organization-store.js";
import type { ProviderName } from "../db/entities.js";
import { comparableName, keyHint, validateApiBase, validateApiKey, validateId, validateName, UUID_PATTERN } from "../credentials/validation.js";
import { ServiceError } from "../errors.js";
import type { Keyring } from "../keyring/index.js";
import { openLegacyToken } from "./legacy-key.js";
import type { LegacyCredential, LegacyOrganization, LegacySource } from "./legacy-source.js";
import { KNOWN_LEGACY_PROVIDERS, mapLegacyProvider } from "./providers.js";

/** Who the audit log names for everything the import writes. */
export const IMPORT_ACTOR = "import:saas-litellm";

export interface ImportOptions {
  orm: Orm;
  /** MASTER_KEY's keyring: imported keys are encrypted under its primary key. */
  keyring: Keyring;
  /** Opens the legacy tokens (legacyKeyring(ENCRYPTION_KEY)). */
  legacyKeyring: Keyring;
  source: LegacySource;
  /** Read and decrypt everything, write nothing. */
  dryRun: boolean;
  /** Rows per transaction (default 500). */
  batchSize?: number;
  onProgress?: (done: number, total: number) => void;
}

export interface SkippedRow {
  /** The legacy id, as it is there. */
  id: string;
  organizationId?: string | null;
  provider?: string | null;
  reason: string;
}

export interface Tally {
  /** Imported by this run (would be, with --dry-run). */
  imported: number;
  /** Already here with the same id: left alone. */
  alreadyPresent: number;
  skipped: SkippedRow[];
}

export interface ImportReport {
  dryRun: boolean;
  organizations: Tally;
  teams: Tally;
  credentials: Tally & { undecryptable: SkippedRow[] };
  /** Things worth knowing that changed nothing (legacy status values this service does not have). */
  notes: string[];
  ms: number;
}

interface OrganizationPlan {
  id: string;
  name: string;
  createdAt: string;
  updatedAt: string;
  legacy: LegacyOrganization;
}

interface TeamPlan {
  id: string;
  organizationId: string;
  name: string;
  createdAt: string;
  updatedAt: string;
}

interface CredentialPlan {
  id: string;
  organizationId: string;
  provider: ProviderName;
  legacyProvider: string;
  name: string;
  apiKey: string;
  apiBase: string | null;
  isActive: boolean;
  createdAt: string;
  updatedAt: string;
  createdBy: string | null;
  updatedBy: string | null;
}

function chunks<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/** The problem a validator found, without the field's value. */
function problem(error: unknown): string {
  if (error instanceof ServiceError) return error.message;
  throw error;
}

function quote(value: string | null | undefined): string {
  return value === null || value === undefined ? "(none)" : JSON.stringify(value);
}

/** Timestamps: the legacy value, else a fallback, else the time of the import. */
function times(createdAt: string | null, updatedAt: string | null, now: string): { createdAt: string; updatedAt: string } {
  const created = createdAt ?? updatedAt ?? now;
  return { createdAt: created, updatedAt: updatedAt ?? created };
}

/** Statements run through MikroORM, which inlines `?` parameters as escaped literals: SQL text here must contain no other `?`. */
async function sql<T = Record<string, unknown>>(em: EntityManager, query: string, params: unknown[] = []): Promise<T[]> {
  return em.getConnection().execute<T[]>(query, params, "all", em.getTransactionContext());
}

export async function importSaasLitellm(options: ImportOptions): Promise<ImportReport> {
  const started = Date.now();
  const { orm, keyring, legacyKeyring, source, dryRun } = options;
  const batchSize = options.batchSize ?? 500;
  const now = new Date().toISOString();
  const report: ImportReport = {
    dryRun,
    organizations: { imported: 0, alreadyPresent: 0, skipped: [] },
    teams: { imported: 0, alreadyPresent: 0, skipped: [] },
    credentials: { imported: 0, alreadyPresent: 0, skipped: [], undecryptable: [] },
    notes: [],
    ms: 0,
  };

  const organizations = await source.readOrganizations();
  const teams = await source.readTeams();
  const credentialTotal = await source.countCredentials();
  const total = organizations.length + teams.length + credentialTotal;
  let done = 0;
  const progress = (n: number) => {
    done += n;
    options.onProgress?.(done, total);
  };
  options.onProgress?.(0, total);

  /** Organisation ids that exist here after this run (imported, already present, or here before): credentials and teams may use them. */
  const available = new Set<string>();
  /** Legacy organisations not imported, with why. */
  const skippedOrganizations = new Map<string, string>();
  /** Organisation ids looked up here and not found. */
  const absent = new Set<string>();

  const readEm = () => orm.em.fork();

  /** Which of these organisation ids exist here (cached). */
  async function resolveOrganizations(ids: Iterable<string>): Promise<void> {
    const unknown = [...new Set(ids)].filter((id) => !available.has(id) && !absent.has(id) && !skippedOrganizations.has(id));
    for (const part of chunks(unknown, 1000)) {
      const found = await sql<{ id: string }>(readEm(), "select id from organizations where id in (?)", [part]);
      const foundIds = new Set(found.map((r) => r.id));
      for (const id of part) (foundIds.has(id) ? available : absent).add(id);
    }
  }

  function organizationProblem(organizationId: string | null): string | undefined {
    if (organizationId === null) return "it has no organization";
    const skipped = skippedOrganizations.get(organizationId);
    if (skipped !== undefined) return `its organization ${quote(organizationId)} is skipped`;
    if (!available.has(organizationId)) return `its organization ${quote(organizationId)} exists neither in the SaaS LiteLLM organizations table nor here`;
    return undefined;
  }

  // Organisations.
  const organizationPlans: OrganizationPlan[] = [];
  const seenOrganizations = new Set<string>();
  for (const org of organizations) {
    const skip = (reason: string) => {
      skippedOrganizations.set(org.id, reason);
      report.organizations.skipped.push({ id: org.id, reason });
    };
    if (seenOrganizations.has(org.id)) continue;
    seenOrganizations.add(org.id);
    let name: string;
    try {
      validateId("organization_id", org.id);
      name = org.name === null || org.name.trim() === "" ? org.id : validateName("name", org.name);
    } catch (error) {
      skip(`${problem(error)}; its teams and credentials are skipped with it`);
      continue;
    }
    organizationPlans.push({ id: org.id, name, ...times(org.createdAt, org.updatedAt, now), legacy: org });
  }
  progress(organizations.length - organizationPlans.length);
  const inactiveOrganizations = organizationPlans.filter((o) => o.legacy.status !== null && o.legacy.status.trim().toLowerCase() !== "active");
  if (inactiveOrganizations.length > 0) {
    report.notes.push(
      `${inactiveOrganizations.length} organization(s) are not active in SaaS LiteLLM; they are imported all the same (this service has no organization status; ` +
        `deactivate their credentials if they must not be served): ${inactiveOrganizations.map((o) => `${quote(o.id)} (${o.legacy.status})`).join(", ")}`,
    );
  }

  for (const batch of chunks(organizationPlans, batchSize)) {
    const present = new Set((await sql<{ id: string }>(readEm(), "select id from organizations where id in (?)", [batch.map((o) => o.id)])).map((r) => r.id));
    // An id that API tokens or portal accounts are still limited to (left from a deleted organisation of that id)
    // is not created again: they would reach it (as CreateOrganization refuses it).
    const stillNamed = await stillNamedIds(
      readEm(),
      batch.filter((o) => !present.has(o.id)).map((o) => o.id),
    );
    for (const o of batch.filter((o) => stillNamed.has(o.id))) {
      const reason = `API tokens or portal accounts are still limited to a deleted organization of this id; revoke the tokens and change the accounts first; its teams and credentials are skipped with it`;
      skippedOrganizations.set(o.id, reason);
      report.organizations.skipped.push({ id: o.id, reason });
    }
    const fresh = batch.filter((o) => !present.has(o.id) && !stillNamed.has(o.id));
    let inserted = new Set<string>(fresh.map((o) => o.id));
    if (!dryRun && fresh.length > 0) {
      inserted = await runChange(orm, async ({ em, audit }) => {
        const values = fresh.map(() => "(?, ?, ?::timestamptz, ?::timestamptz)").join(", ");
        const rows = await sql<{ id: string }>(
          em,
          `insert into organizations (id, name, created_at, updated_at) values ${values} on conflict (id) do nothing returning id`,
          fresh.flatMap((o) => [o.id, o.name, o.createdAt, o.updatedAt]),
        );
        const ids = new Set(rows.map((r) => r.id));
        for (const o of fresh.filter((o) => ids.has(o.id))) {
          audit({
            actor: IMPORT_ACTOR,
            action: "organization.import",
            organizationId: o.id,
            details: { name: o.name, imported_from: "saas-litellm", legacy_status: o.legacy.status },
          });
        }
        return ids;
      });
    }
    for (const o of batch) {
      if (stillNamed.has(o.id)) continue;
      available.add(o.id);
      if (inserted.has(o.id)) report.organizations.imported++;
      else report.organizations.alreadyPresent++;
    }
    progress(batch.length);
  }

  // Teams.
  await resolveOrganizations(teams.flatMap((t) => (t.organizationId === null ? [] : [t.organizationId])));
  const teamPlans: TeamPlan[] = [];
  const seenTeams = new Set<string>();
  for (const team of teams) {
    const skip = (reason: string) => report.teams.skipped.push({ id: team.id, organizationId: team.organizationId, reason });
    if (seenTeams.has(team.id)) continue;
    seenTeams.add(team.id);
    try {
      validateId("team_id", team.id);
    } catch (error) {
      skip(problem(error));
      continue;
    }
    const orgProblem = organizationProblem(team.organizationId);
    if (orgProblem !== undefined) {
      skip(orgProblem);
      continue;
    }
    let name: string;
    try {
      name = team.name === null || team.name.trim() === "" ? team.id : validateName("name", team.name);
    } catch (error) {
      skip(problem(error));
      continue;
    }
    teamPlans.push({ id: team.id, organizationId: team.organizationId!, name, ...times(team.createdAt, team.updatedAt, now) });
  }
  progress(teams.length - teamPlans.length);
  const plannedTeams = new Set(teamPlans.map((t) => t.id));
  const inactiveTeams = teams.filter((t) => t.status !== null && t.status.trim().toLowerCase() !== "active" && plannedTeams.has(t.id));
  if (inactiveTeams.length > 0) {
    report.notes.push(
      `${inactiveTeams.length} team(s) are not active in SaaS LiteLLM; they are imported all the same (this service has no team status): ` +
        inactiveTeams.map((t) => `${quote(t.id)} (${t.status})`).join(", "),
    );
  }

  for (const batch of chunks(teamPlans, batchSize)) {
    const existing = new Map(
      (await sql<{ id: string; organization_id: string }>(readEm(), "select id, organization_id from teams where id in (?)", [batch.map((t) => t.id)])).map(
        (r) => [r.id, r.organization_id],
      ),
    );
    const fresh: TeamPlan[] = [];
    for (const t of batch) {
      const there = existing.get(t.id);
      if (there === undefined) fresh.push(t);
      else if (there === t.organizationId) report.teams.alreadyPresent++;
      else
        report.teams.skipped.push({
          id: t.id,
          organizationId: t.organizationId,
          reason: `a team with this id already exists here, in organization ${quote(there)}`,
        });
    }
    let inserted = new Set<string>(fresh.map((t) => t.id));
    if (!dryRun && fresh.length > 0) {
      inserted = await runChange(orm, async ({ em, audit }) => {
        const values = fresh.map(() => "(?, ?, ?, ?::timestamptz, ?::timestamptz)").join(", ");
        const rows = await sql<{ id: string }>(
          em,
          `insert into teams (id, organization_id, name, created_at, updated_at) values ${values} on conflict (id) do nothing returning id`,
          fresh.flatMap((t) => [t.id, t.organizationId, t.name, t.createdAt, t.updatedAt]),
        );
        const ids = new Set(rows.map((r) => r.id));
        for (const t of fresh.filter((t) => ids.has(t.id))) {
          audit({
            actor: IMPORT_ACTOR,
            action: "team.import",
            organizationId: t.organizationId,
            target: t.id,
            details: { name: t.name, imported_from: "saas-litellm" },
          });
        }
        return ids;
      });
    }
    for (const t of fresh) {
      if (inserted.has(t.id)) report.teams.imported++;
      else report.teams.alreadyPresent++; // created concurrently
    }
    progress(batch.length);
  }

  // Credentials, oldest first: of two with one name (ignoring case and compatibility forms) in an organisation and provider, the earlier keeps it.
  /** (organisation, provider, comparable name) → the credential that holds the name in this run. */
  const claimed = new Map<string, string>();
  const nameKey = (organizationId: string, provider: ProviderName, name: string) => `${organizationId}\u0000${provider}\u0000${comparableName(name)}`;
  async function importCredentialBatch(rows: LegacyCredential[]): Promise<void> {
    const tally = report.credentials;
    const skip = (row: LegacyCredential, reason: string) =>
      tally.skipped.push({ id: row.id, organizationId: row.organizationId, provider: row.provider, reason });
    await resolveOrganizations(rows.flatMap((r) => (r.organizationId === null ? [] : [r.organizationId])));
    const ids = rows.map((r) => r.id.toLowerCase()).filter((id) => UUID_PATTERN.test(id));
    const present = new Map(
      ids.length === 0
        ? []
        : (
            await sql<{ id: string; organization_id: string; provider: string }>(
              readEm(),
              "select id, organization_id, provider from provider_credentials where id in (?)",
              [ids],
            )
          ).map((r) => [r.id, r]),
    );

    const candidates: CredentialPlan[] = [];
    for (const row of rows) {
      if (!UUID_PATTERN.test(row.id)) {
        skip(row, "credential_id is not a UUID");
        continue;
      }
      const id = row.id.toLowerCase();
      const provider = mapLegacyProvider(row.provider);
      const here = present.get(id);
      if (here !== undefined) {
        if (here.organization_id === row.organizationId && here.provider === provider) {
          tally.alreadyPresent++;
          // It still holds its name against later legacy rows, as in the run that imported it (same report on a rerun).
          const name = row.name?.trim() ?? "";
          if (name !== "" && !claimed.has(nameKey(here.organization_id, provider, name))) claimed.set(nameKey(here.organization_id, provider, name), id);
        } else {
          skip(row, `its id is already used here by a credential of organization ${quote(here.organization_id)} and provider ${here.provider}`);
        }
        continue;
      }
      const orgProblem = organizationProblem(row.organizationId);
      if (orgProblem !== undefined) {
        skip(row, orgProblem);
        continue;
      }
      if (provider === undefined) {
        skip(row, `provider ${quote(row.provider)} is not one this service stores (${KNOWN_LEGACY_PROVIDERS}, ignoring case)`);
        continue;
      }
      let name: string;
      let apiBase: string | null;
      try {
        name = validateName("credential_name", row.name ?? "");
        apiBase = validateApiBase(row.apiBase ?? "");
      } catch (error) {
        skip(row, problem(error));
        continue;
      }
      const opened = openLegacyToken(legacyKeyring, row.token);
      if (!opened.ok) {
        tally.undecryptable.push({ id: row.id, organizationId: row.organizationId, provider: row.provider, reason: opened.reason });
        continue;
      }
      let apiKey: string;
      try {
        apiKey = validateApiKey(opened.plaintext, provider, apiBase);
      } catch (error) {
        skip(row, `the stored key is refused here: ${problem(error)}`);
        continue;
      }
      const key = nameKey(row.organizationId!, provider, name);
      const holder = claimed.get(key);
      if (holder !== undefined) {
        skip(row, `credential ${holder}, created earlier, has the same name ignoring case (${quote(name)}) for this organization and provider`);
        continue;
      }
      claimed.set(key, id);
      candidates.push({
        id,
        organizationId: row.organizationId!,
        provider,
        legacyProvider: row.provider!,
        name,
        apiKey,
        apiBase,
        isActive: row.isActive === true,
        ...times(row.createdAt, row.updatedAt, now),
        createdBy: row.createdBy,
        updatedBy: row.updatedBy,
      });
    }

    // Names already taken here by other credentials (created in the portal, or an earlier import of another row).
    const taken = new Map<string, string>();
    if (candidates.length > 0) {
      const rowsHere = await sql<{ id: string; organization_id: string; provider: ProviderName; credential_name: string }>(
        readEm(),
        "select id, organization_id, provider, credential_name from provider_credentials where organization_id in (?) and (credential_name_key in (?) or credential_name_key is null)",
        [[...new Set(candidates.map((c) => c.organizationId))], [...new Set(candidates.map((c) => comparableName(c.name)))]],
      );
      for (const r of rowsHere) taken.set(nameKey(r.organization_id, r.provider, r.credential_name), r.id);
    }
    const fresh: CredentialPlan[] = [];
    for (const c of candidates) {
      const holder = taken.get(nameKey(c.organizationId, c.provider, c.name));
      if (holder !== undefined && holder !== c.id) {
        tally.skipped.push({
          id: c.id,
          organizationId: c.organizationId,
          provider: c.legacyProvider,
          reason: `a credential named ${quote(c.name)} (ignoring case) already exists here for this organization and provider: ${holder}`,
        });
      } else {
        fresh.push(c);
      }
    }
    if (fresh.length === 0) return;
    if (dryRun) {
      tally.imported += fresh.length;
      return;
    }

    const inserted = await runChange(orm, async ({ em, audit, invalidate }) => {
      const values: string[] = [];
      const params: unknown[] = [];
      const hints = new Map<string, string>();
      for (const c of fresh) {
        const { token, keyId, binding } = keyring.encryptBound(c.apiKey, {
          id: c.id,
          organizationId: c.organizationId,
          provider: c.provider,
          apiBase: c.apiBase,
        });
        const hint = keyHint(c.apiKey, c.provider);
        hints.set(c.id, hint);
        // key_set_at: the legacy created_at. SaaS LiteLLM's updated_at also moves on renames and (de)activations,
        // so it could make an old key look freshly set; created_at never understates a key's age.
        values.push("(?::uuid, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?::timestamptz, 1, ?::timestamptz, ?::timestamptz, ?, ?, null, 1, 0, ?::timestamptz)");
        params.push(
          c.id,
          c.organizationId,
          c.provider,
          c.name,
          comparableName(c.name),
          token,
          keyId,
          binding,
          hint,
          c.apiBase,
          c.isActive,
          c.isActive ? c.updatedAt : null,
          c.createdAt,
          c.updatedAt,
          c.createdBy,
          c.updatedBy,
          c.createdAt,
        );
      }
      // No conflict target: a row whose id or name (ignoring case) appeared here meanwhile is not inserted, and is classified below.
      const rows = await sql<{ id: string }>(
        em,
        `insert into provider_credentials (id, organization_id, provider, credential_name, credential_name_key, encrypted_api_key, key_id, key_binding, key_hint,
           api_base, is_active, activated_at, version, created_at, updated_at, created_by, updated_by, last_used_at, weight, use_count, key_set_at)
         values ${values.join(", ")} on conflict do nothing returning id`,
        params,
      );
      const ids = new Set(rows.map((r) => r.id));
      for (const c of fresh) {
        if (!ids.has(c.id)) continue;
        // Running replicas drop what they cached for this (organisation, provider) pair when this commits.
        invalidate({ organizationId: c.organizationId, provider: c.provider, reason: "credential" });
        audit({
          actor: IMPORT_ACTOR,
          action: "credential.import",
          organizationId: c.organizationId,
          credentialId: c.id,
          details: {
            provider: c.provider,
            legacy_provider: c.legacyProvider,
            credential_name: c.name,
            key_hint: hints.get(c.id),
            api_base: c.apiBase,
            is_active: c.isActive,
            imported_from: "saas-litellm",
          },
        });
      }
      return ids;
    });
    const missing = fresh.filter((c) => !inserted.has(c.id));
    const nowPresent =
      missing.length === 0
        ? new Set<string>()
        : new Set((await sql<{ id: string }>(readEm(), "select id from provider_credentials where id in (?)", [missing.map((c) => c.id)])).map((r) => r.id));
    for (const c of fresh) {
      if (inserted.has(c.id)) tally.imported++;
      else if (nowPresent.has(c.id)) tally.alreadyPresent++;
      else {
        tally.skipped.push({
          id: c.id,
          organizationId: c.organizationId,
          provider: c.legacyProvider,
          reason: `a credential named ${quote(c.name)} (ignoring case) already exists here for this organization and provider`,
        });
      }
    }
  }

  let cursor: Awaited<ReturnType<LegacySource["readCredentials"]>>["cursor"];
  for (;;) {
    const page = await source.readCredentials(cursor, batchSize);
    cursor = page.cursor;
    if (page.rows.length === 0) break;
    await importCredentialBatch(page.rows);
    progress(page.rows.length);
    if (page.rows.length < batchSize) break;
  }

  report.ms = Date.now() - started;
  const imported = report.organizations.imported + report.teams.imported + report.credentials.imported;
  // A run that imports nothing writes nothing, not even this summary: a rerun leaves every table as it was.
  if (!dryRun && imported > 0) {
    await runChange(orm, async ({ audit }) =>
      audit({
        actor: IMPORT_ACTOR,
        action: "saas_litellm.import",
        target: `saas-litellm:${source.where}`,
        details: summaryDetails(report),
      }),
    );
  }
  return report;
}

/** Counts only: no ids, names or keys. */
export function summaryDetails(report: ImportReport): Record<string, unknown> {
  const tally = (t: Tally) => ({ imported: t.imported, already_present: t.alreadyPresent, skipped: t.skipped.length });
  return {
    organizations: tally(report.organizations),
    teams: tally(report.teams),
    credentials: { ...tally(report.credentials), undecryptable: report.credentials.undecryptable.length },
  };
}

/** Exit status: 0 when every row was imported or already present, 3 when some were skipped or could not be decrypted. */
export function exitCodeOf(report: ImportReport): 0 | 3 {
  const problems =
    report.organizations.skipped.length + report.teams.skipped.length + report.credentials.skipped.length + report.credentials.undecryptable.length;
  return problems === 0 ? 0 : 3;
}
