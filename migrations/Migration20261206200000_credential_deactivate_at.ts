import { Migration } from "@mikro-orm/migrations";

// Append-only: never edit a migration that has landed; add a new one.
//
// RollCredential with an overlap: the old credential stays active beside the new one until deactivate_at, then the
// service deactivates it (a sweeper on every replica) and ResolveKey stops handing it out from that moment even
// before the sweeper runs. Null: nothing scheduled (every existing row). Indexed for the sweeper: only rows with a
// scheduled deactivation are in the index.
// Replicas older than this migration ignore the column: they would go on handing out an old credential after its
// overlap until a newer replica's sweeper deactivates it. Roll with an overlap once every replica runs the version
// that ships it.
export class Migration20261206200000_credential_deactivate_at extends Migration {
  override async up(): Promise<void> {
    await this.execute(`alter table provider_credentials add column deactivate_at timestamptz null;`);
    await this.execute(`create index provider_credentials_deactivate_at_idx on provider_credentials (deactivate_at) where deactivate_at is not null;`);
  }

  override async down(): Promise<void> {
    // Without the column a scheduled deactivation would never happen: carry out those that are due or pending now.
    await this.execute(`update provider_credentials set is_active = false where deactivate_at is not null and is_active;`);
    await this.execute(`drop index if exists provider_credentials_deactivate_at_idx;`);
    await this.execute(`alter table provider_credentials drop column if exists deactivate_at;`);
  }
}
