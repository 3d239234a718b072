import { Migration } from "@mikro-orm/migrations";

// Administrators of the portal and their sessions. Append-only: never edit a landed migration.
export class Migration20261126010000_admins extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
create table admin_users (
  id uuid primary key,
  email text not null,
  password_hash text not null,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  last_sign_in_at timestamptz
);`);
    this.addSql(`create unique index admin_users_email_uq on admin_users (lower(email));`);
    // Only a hash of the session id is stored: a database dump cannot be replayed as cookies.
    this.addSql(`
create table admin_sessions (
  id_hash text primary key,
  admin_id uuid not null references admin_users (id) on delete cascade,
  created_at timestamptz not null,
  last_seen_at timestamptz not null,
  revoked_at timestamptz,
  source text,
  user_agent text
);`);
    this.addSql(`create index admin_sessions_admin_idx on admin_sessions (admin_id);`);
    // Sign-in rate limiting counts recent failures per account and per address from the audit log.
    this.addSql(`create index audit_events_sign_in_failed_target_idx on audit_events (target, occurred_at) where action = 'admin.sign_in_failed';`);
    this.addSql(`create index audit_events_sign_in_failed_source_idx on audit_events (source, occurred_at) where action = 'admin.sign_in_failed';`);
    this.addSql(`create index audit_events_action_idx on audit_events (action, occurred_at desc, id desc);`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop index audit_events_action_idx, audit_events_sign_in_failed_source_idx, audit_events_sign_in_failed_target_idx;`);
    this.addSql(`drop table admin_sessions, admin_users;`);
  }
}
