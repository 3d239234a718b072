import { Migration } from "@mikro-orm/migrations";

// Two-factor sign-in (TOTP, RFC 6238). On admin_users: the authenticator's secret and the one being enrolled,
// both sealed with a key derived from MASTER_KEY (Keyring.sealSecret, bound to the account's id), when it was
// enabled, and the last time step a code was accepted for (a code is never accepted twice). Recovery codes are
// stored as salted SHA-256 hashes and used once; the tokens SignIn gives between the password and the code are
// stored as SHA-256 hashes, expire after 5 minutes and are used once. One row holds the security policy.
// Append-only: never edit a landed migration.
export class Migration20261206170000_two_factor extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
alter table admin_users
  add column totp_secret text,
  add column totp_enabled_at timestamptz,
  add column totp_last_step bigint,
  add column totp_pending_secret text,
  add column totp_pending_at timestamptz,
  add constraint admin_users_totp_ck check ((totp_secret is null) = (totp_enabled_at is null)),
  add constraint admin_users_totp_pending_ck check ((totp_pending_secret is null) = (totp_pending_at is null));`);
    this.addSql(`
create table admin_recovery_codes (
  admin_id uuid not null references admin_users (id) on delete cascade,
  code_hash text not null,
  created_at timestamptz not null,
  used_at timestamptz,
  primary key (admin_id, code_hash)
);`);
    this.addSql(`
create table admin_second_factor_tokens (
  id_hash text primary key,
  admin_id uuid not null references admin_users (id) on delete cascade,
  created_at timestamptz not null,
  expires_at timestamptz not null,
  used_at timestamptz,
  failures integer not null default 0
);`);
    this.addSql(`create index admin_second_factor_tokens_expires_idx on admin_second_factor_tokens (expires_at);`);
    this.addSql(`
create table security_policy (
  id boolean primary key default true check (id),
  require_two_factor boolean not null default false,
  updated_at timestamptz not null default now()
);`);
    this.addSql(`insert into security_policy (id, require_two_factor) values (true, false);`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table security_policy, admin_second_factor_tokens, admin_recovery_codes;`);
    this.addSql(`
alter table admin_users
  drop constraint admin_users_totp_pending_ck,
  drop constraint admin_users_totp_ck,
  drop column totp_pending_at,
  drop column totp_pending_secret,
  drop column totp_last_step,
  drop column totp_enabled_at,
  drop column totp_secret;`);
  }
}
