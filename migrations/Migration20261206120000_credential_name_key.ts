import { Migration } from "@mikro-orm/migrations";

// Append-only: never edit a migration that has landed; add a new one.
//
// Credential names are unique per organisation and provider after NFKC and case folding ("ｐｒｏｄ", "PROD" and
// "prod" are one name), not only ignoring case: credential_name_key holds the comparable form, which the service
// computes (comparableName in service/src/credentials/validation.ts; PostgreSQL's lower() depends on the
// database's locale, so the form is computed here in the same way, not in SQL).
//
// Existing rows are kept as they are, names included. Of rows whose names already meet in the new form (allowed
// until now), the oldest gets the key and the others keep a null one: they stay listed, usable and renamable (a
// rename gives them a key), and the service refuses new names that meet any of them. Nothing fails the upgrade.
// The old index (lower(credential_name)) stays for replicas still running the previous version.

/** comparableName, as of this migration. */
function comparableName(name: string): string {
  return name.normalize("NFKC").toUpperCase().toLowerCase().normalize("NFKC");
}

const BATCH = 1000;

export class Migration20261206120000_credential_name_key extends Migration {
  override async up(): Promise<void> {
    await this.execute(`alter table provider_credentials add column credential_name_key text;`);
    const rows = (await this.execute(`select id, organization_id, provider, credential_name from provider_credentials order by created_at, id;`)) as Array<{
      id: string;
      organization_id: string;
      provider: string;
      credential_name: string;
    }>;
    const holders = new Set<string>();
    const keyed: Array<[string, string]> = [];
    for (const row of rows) {
      const key = comparableName(row.credential_name);
      const slot = JSON.stringify([row.organization_id, row.provider, key]);
      if (holders.has(slot)) continue; // a younger row whose name meets an older one's: kept, without a key
      holders.add(slot);
      keyed.push([row.id, key]);
    }
    for (let i = 0; i < keyed.length; i += BATCH) {
      const batch = keyed.slice(i, i + BATCH);
      await this.execute(
        `update provider_credentials c set credential_name_key = v.key from (values ${batch.map(() => "(?::uuid, ?)").join(", ")}) as v (id, key) where c.id = v.id;`,
        batch.flat(),
      );
    }
    await this.execute(`create unique index provider_credentials_name_key_uq on provider_credentials (organization_id, provider, credential_name_key);`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop index provider_credentials_name_key_uq;`);
    this.addSql(`alter table provider_credentials drop column credential_name_key;`);
  }
}
