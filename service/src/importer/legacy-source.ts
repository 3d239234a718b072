// Reads a SaaS LiteLLM database, never writing to it: one read-only,
// repeatable-read transaction (a consistent snapshot) for the whole import.
// Only the columns the import needs are selected (team_credits also holds
// LiteLLM virtual keys, which are never read).
import pg from "pg";

/** The legacy database cannot be used: the message says why, without a password or a key. */
export class LegacySourceError extends Error {
  override name = "LegacySourceError";
}

export interface LegacyOrganization {
  id: string;
  name: string | null;
  status: string | null;
  /** ISO 8601 in UTC with microseconds, or null. */
  createdAt: string | null;
  updatedAt: string | null;
}

export interface LegacyTeam {
  id: string;
  organizationId: string | null;
  name: string | null;
  status: string | null;
  createdAt: string | null;
  updatedAt: string | null;
}

export interface LegacyCredential {
  id: string;
  organizationId: string | null;
  provider: string | null;
  /** The Fernet token; never printed. */
  token: string | null;
  apiBase: string | null;
  name: string | null;
  isActive: boolean | null;
  createdAt: string | null;
  updatedAt: string | null;
  createdBy: string | null;
  updatedBy: string | null;
}

/** Where a cursor over credentials stands: the last row's sort time and id. */
export interface CredentialCursor {
  sortAt: string;
  id: string;
}

/** Parses --from; LegacySourceError when it is not a PostgreSQL URL. The message never repeats a password. */
export function parseLegacyUrl(text: string): URL {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new LegacySourceError("--from must be a PostgreSQL URL such as postgres://user:password@host:5432/saas_litellm");
  }
  if (url.protocol !== "postgres:" && url.protocol !== "postgresql:") {
    throw new LegacySourceError(`--from must be a PostgreSQL URL (postgres:// or postgresql://), not ${url.protocol}//...`);
  }
  if (url.hostname === "" && !url.searchParams.has("host"))
    throw new LegacySourceError("--from names no host: postgres://user:password@host:5432/saas_litellm");
  if (url.pathname.replace(/^\//, "") === "")
    throw new LegacySourceError("--from names no database: add it after the host, as in postgres://user:password@host:5432/saas_litellm");
  return url;
}

/** host:port/database of a URL: what reports and errors show (no user, no password, no parameters). */
export function describeDatabase(url: URL): string {
  const host = url.hostname || url.searchParams.get("host") || "localhost";
  return `${host}:${url.port || "5432"}/${decodeURIComponent(url.pathname.replace(/^\//, ""))}`;
}

type Table = "organizations" | "team_credits" | "provider_credentials";

const REQUIRED: Record<Table, readonly string[]> = {
  organizations: ["organization_id", "name"],
  team_credits: ["team_id", "organization_id"],
  provider_credentials: ["credential_id", "organization_id", "provider", "api_key", "credential_name"],
};

/** Columns read when present (null otherwise). */
const OPTIONAL: Record<Table, readonly string[]> = {
  organizations: ["status", "created_at", "updated_at"],
  team_credits: ["name", "team_name", "status", "created_at", "updated_at"],
  provider_credentials: ["api_base", "is_active", "created_at", "updated_at", "created_by", "updated_by"],
};

const TIMESTAMP_COLUMNS = new Set(["created_at", "updated_at"]);

function ident(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export class LegacySource {
  readonly where: string;
  private columns = new Map<Table, Map<string, string>>();

  private constructor(
    private readonly client: pg.Client,
    url: URL,
  ) {
    this.where = describeDatabase(url);
  }

  /** Connects, opens the snapshot and checks the schema; LegacySourceError with a clear message otherwise. */
  static async open(url: URL): Promise<LegacySource> {
    const client = new pg.Client({
      connectionString: url.toString(),
      connectionTimeoutMillis: 10_000,
      application_name: "provider-credentials-import",
    });
    const where = describeDatabase(url);
    client.on("error", () => undefined); // a dropped connection fails the next query, which reports it
    try {
      await client.connect();
    } catch (error) {
      await client.end().catch(() => undefined);
      throw new LegacySourceError(`cannot connect to the SaaS LiteLLM database at ${where}: ${connectionProblem(error)}`);
    }
    const source = new LegacySource(client, url);
    try {
      await client.query("begin transaction isolation level repeatable read read only");
      await source.checkSchema();
    } catch (error) {
      await source.close();
      if (error instanceof LegacySourceError) throw error;
      throw new LegacySourceError(`cannot read the SaaS LiteLLM database at ${where}: ${(error as Error).message}`);
    }
    return source;
  }

  async close(): Promise<void> {
    await this.client.query("rollback").catch(() => undefined);
    await this.client.end().catch(() => undefined);
  }

  private async checkSchema(): Promise<void> {
    const tables: Table[] = ["organizations", "team_credits", "provider_credentials"];
    const { rows } = await this.client.query<{ table_name: Table; column_name: string; type: string }>(
      `select t.name as table_name, a.attname as column_name, format_type(a.atttypid, a.atttypmod) as type
       from unnest($1::text[]) as t(name)
       join pg_attribute a on a.attrelid = to_regclass(t.name) and a.attnum > 0 and not a.attisdropped`,
      [tables],
    );
    for (const table of tables) this.columns.set(table, new Map());
    for (const row of rows) this.columns.get(row.table_name)!.set(row.column_name, row.type);
    const problems: string[] = [];
    const missingTables = tables.filter((t) => this.columns.get(t)!.size === 0);
    if (missingTables.length > 0) problems.push(`no table${missingTables.length === 1 ? "" : "s"} ${missingTables.join(", ")}`);
    for (const table of tables) {
      const columns = this.columns.get(table)!;
      if (columns.size === 0) continue;
      const missing = REQUIRED[table].filter((c) => !columns.has(c));
      if (missing.length > 0) problems.push(`table ${table} has no column${missing.length === 1 ? "" : "s"} ${missing.join(", ")}`);
      for (const column of [...REQUIRED[table], ...OPTIONAL[table]]) {
        const type = columns.get(column);
        if (type !== undefined && TIMESTAMP_COLUMNS.has(column) && timestampKind(type) === undefined) {
          problems.push(`${table}.${column} is of type ${type}, not a timestamp`);
        }
      }
    }
    if (problems.length > 0) {
      throw new LegacySourceError(
        `${this.where} does not look like a SaaS LiteLLM database: ${problems.join("; ")} ` +
          "(expected organizations(organization_id, name, ...), team_credits(team_id, organization_id, ...) and " +
          "provider_credentials(credential_id, organization_id, provider, api_key, api_base, credential_name, is_active, ...) on the search_path)",
      );
    }
  }

  /** A select-list expression for a column: the column as text, or null when the table lacks it. */
  private column(table: Table, name: string, cast = "text"): string {
    return this.columns.get(table)!.has(name) ? `${ident(name)}::${cast}` : `null::${cast}`;
  }

  /** The column as a naive UTC timestamp (SQLAlchemy's DateTime holds datetime.utcnow() without a zone), or null. */
  private naiveUtc(table: Table, name: string): string {
    const type = this.columns.get(table)!.get(name);
    if (type === undefined) return "null::timestamp";
    return timestampKind(type) === "with zone" ? `(${ident(name)} at time zone 'UTC')` : `${ident(name)}::timestamp`;
  }

  /** The column as ISO 8601 text in UTC with microseconds (exact, unlike a JavaScript Date), or null. */
  private isoUtc(table: Table, name: string): string {
    return `to_char(${this.naiveUtc(table, name)}, 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
  }

  async readOrganizations(): Promise<LegacyOrganization[]> {
    const t: Table = "organizations";
    const { rows } = await this.client.query<LegacyOrganization>(
      `select organization_id::text as id, name::text as name, ${this.column(t, "status")} as status,
         ${this.isoUtc(t, "created_at")} as "createdAt", ${this.isoUtc(t, "updated_at")} as "updatedAt"
       from organizations where organization_id is not null order by organization_id::text`,
    );
    return rows;
  }

  async readTeams(): Promise<LegacyTeam[]> {
    const t: Table = "team_credits";
    const columns = this.columns.get(t)!;
    const name = columns.has("name") ? this.column(t, "name") : this.column(t, "team_name");
    const { rows } = await this.client.query<LegacyTeam>(
      `select team_id::text as id, organization_id::text as "organizationId", ${name} as name, ${this.column(t, "status")} as status,
         ${this.isoUtc(t, "created_at")} as "createdAt", ${this.isoUtc(t, "updated_at")} as "updatedAt"
       from team_credits where team_id is not null order by team_id::text`,
    );
    return rows;
  }

  async countCredentials(): Promise<number> {
    const { rows } = await this.client.query<{ n: string }>("select count(*) as n from provider_credentials");
    return Number(rows[0].n);
  }

  /** The sort order of credentials: oldest first (so that of two with one name the earlier keeps it), then id. */
  private sortExpression(): string {
    const t: Table = "provider_credentials";
    return `coalesce(${this.naiveUtc(t, "created_at")}, ${this.naiveUtc(t, "updated_at")}, timestamp '1970-01-01')`;
  }

  /** The next page of credentials after the cursor, oldest first. */
  async readCredentials(after: CredentialCursor | undefined, limit: number): Promise<{ rows: LegacyCredential[]; cursor: CredentialCursor | undefined }> {
    const t: Table = "provider_credentials";
    const sort = this.sortExpression();
    const params: unknown[] = [limit];
    let where = "";
    if (after) {
      params.push(after.sortAt, after.id);
      where = `where (${sort}, credential_id::text) > ($2::timestamp, $3::text)`;
    }
    const { rows } = await this.client.query<LegacyCredential & { sortAt: string }>(
      `select credential_id::text as id, organization_id::text as "organizationId", provider::text as provider,
         api_key::text as token, ${this.column(t, "api_base")} as "apiBase", credential_name::text as name,
         ${this.column(t, "is_active", "boolean")} as "isActive",
         ${this.isoUtc(t, "created_at")} as "createdAt", ${this.isoUtc(t, "updated_at")} as "updatedAt",
         ${this.column(t, "created_by")} as "createdBy", ${this.column(t, "updated_by")} as "updatedBy",
         to_char(${sort}, 'YYYY-MM-DD HH24:MI:SS.US') as "sortAt"
       from provider_credentials ${where}
       order by ${sort}, credential_id::text
       limit $1`,
      params,
    );
    const last = rows[rows.length - 1];
    return {
      rows: rows.map(({ sortAt: _sortAt, ...row }) => row),
      cursor: last ? { sortAt: last.sortAt, id: last.id } : undefined,
    };
  }

  /** Every non-empty api_key, a page at a time (for the up-front check of the ENCRYPTION_KEY). */
  async *tokens(pageSize = 1000): AsyncGenerator<string[]> {
    let after = "";
    for (;;) {
      const { rows } = await this.client.query<{ id: string; token: string }>(
        `select credential_id::text as id, api_key::text as token from provider_credentials
         where api_key is not null and api_key <> '' and credential_id::text > $1
         order by credential_id::text limit $2`,
        [after, pageSize],
      );
      if (rows.length > 0) yield rows.map((r) => r.token);
      if (rows.length < pageSize) return;
      after = rows[rows.length - 1].id;
    }
  }
}

function timestampKind(type: string): "with zone" | "without zone" | undefined {
  if (/^timestamp(\(\d\))? with time zone$/.test(type)) return "with zone";
  if (/^timestamp(\(\d\))? without time zone$/.test(type) || type === "date") return "without zone";
  return undefined;
}

/** Why a connection failed, in words; pg's messages name users and databases but never passwords. */
function connectionProblem(error: unknown): string {
  const e = error as { code?: string; message?: string };
  switch (e.code) {
    case "ECONNREFUSED":
      return "connection refused (is PostgreSQL running there, and is the port right?)";
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return "host not found";
    case "ETIMEDOUT":
      return "timed out";
    case "28P01":
    case "28000":
      return `authentication failed (${e.message})`;
    case "3D000":
      return `${e.message}`;
  }
  if (/timeout/i.test(e.message ?? "")) return "timed out after 10 s";
  return e.message ?? String(error);
}
