import { Migration } from "@mikro-orm/migrations";

// Portal accounts get a role, an optional list of organisations and a disabled flag. Existing administrators
// become owners (they could do everything). Append-only: never edit a landed migration.
export class Migration20261206160000_admin_roles extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
alter table admin_users
  add column role text not null default 'owner',
  add column organization_ids text[],
  add column disabled_at timestamptz,
  add constraint admin_users_role_ck check (role in ('owner', 'editor', 'viewer')),
  add constraint admin_users_owner_unlimited_ck check (role <> 'owner' or organization_ids is null),
  add constraint admin_users_organization_ids_ck check (organization_ids is null or cardinality(organization_ids) between 1 and 1000);`);
  }

  override async down(): Promise<void> {
    this.addSql(`
alter table admin_users
  drop constraint admin_users_organization_ids_ck,
  drop constraint admin_users_owner_unlimited_ck,
  drop constraint admin_users_role_ck,
  drop column disabled_at,
  drop column organization_ids,
  drop column role;`);
  }
}
