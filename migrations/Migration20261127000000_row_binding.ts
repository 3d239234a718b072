import { Migration } from "@mikro-orm/migrations";

// Append-only: never edit a migration that has landed; add a new one.
//
// Binds every stored key to its row: key_binding is a MAC (keyed from the
// master key, so SQL cannot compute it) over the credential's id,
// organisation, provider, api_base and ciphertext. Rows that exist when this
// migration runs are listed in provider_credentials_unbound; the service binds
// them at its next start (it holds MASTER_KEY) and removes them from the list.
// A row with no binding that is not on the list is refused with DATA_LOSS.
export class Migration20261127000000_row_binding extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table provider_credentials add column key_binding text;`);
    this.addSql(`
create table provider_credentials_unbound (
  id uuid primary key references provider_credentials (id) on delete cascade
);`);
    this.addSql(`insert into provider_credentials_unbound (id) select id from provider_credentials;`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table provider_credentials_unbound;`);
    this.addSql(`alter table provider_credentials drop column key_binding;`);
  }
}
