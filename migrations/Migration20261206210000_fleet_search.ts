import { Migration } from "@mikro-orm/migrations";

// Append-only: never edit a migration that has landed; add a new one.
//
// Fleet views (SearchCredentials, ListUncoveredOrganizations): credentials across every organisation in the order
// SearchCredentials answers (organisation, provider, name, id), with what its filters and ListUncoveredOrganizations'
// NOT EXISTS read (key hint, active, scheduled deactivation, failing, key age) beside it, so that both read this
// index alone (an index-only scan) and never the rows, whose ciphertext makes them several times wider.
// Only adds an index: the previous version keeps working during a rolling upgrade (it ignores the index).
export class Migration20261206210000_fleet_search extends Migration {
  override async up(): Promise<void> {
    await this.execute(
      `create index if not exists provider_credentials_fleet_idx on provider_credentials (organization_id, provider, credential_name, id)
         include (key_hint, is_active, deactivate_at, failing_since, key_set_at);`,
    );
  }

  override async down(): Promise<void> {
    await this.execute(`drop index if exists provider_credentials_fleet_idx;`);
  }
}
