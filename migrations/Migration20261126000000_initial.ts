import { Migration } from "@mikro-orm/migrations";

// Append-only: never edit a migration that has landed; add a new one.
export class Migration20261126000000_initial extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
create table organizations (
  id text primary key check (id ~ '^[A-Za-z0-9._-]{1,64}$'),
  name text not null,
  created_at timestamptz not null,
  updated_at timestamptz not null
);`);
    this.addSql(`
create table teams (
  id text primary key check (id ~ '^[A-Za-z0-9._-]{1,64}$'),
  organization_id text not null references organizations (id) on delete restrict,
  name text not null,
  created_at timestamptz not null,
  updated_at timestamptz not null
);`);
    this.addSql(`create index teams_organization_idx on teams (organization_id, id);`);
    this.addSql(`
create table provider_credentials (
  id uuid primary key,
  organization_id text not null references organizations (id) on delete restrict,
  provider text not null check (provider in ('openai', 'anthropic', 'gemini', 'fireworks')),
  credential_name text not null,
  encrypted_api_key text not null,
  key_id text not null,
  key_hint text not null,
  api_base text,
  is_active boolean not null,
  activated_at timestamptz,
  version integer not null default 1,
  created_at timestamptz not null,
  updated_at timestamptz not null,
  created_by text,
  updated_by text,
  last_used_at timestamptz
);`);
    // Names are unique per organisation and provider, ignoring case.
    this.addSql(`create unique index provider_credentials_name_uq on provider_credentials (organization_id, provider, lower(credential_name));`);
    // ResolveKey: the most recently activated active credential of (organisation, provider).
    this.addSql(`create index provider_credentials_resolve_idx on provider_credentials (organization_id, provider, is_active, activated_at desc, id desc);`);
    // ListCredentials: newest first, keyset paged.
    this.addSql(`create index provider_credentials_list_idx on provider_credentials (organization_id, created_at desc, id desc);`);
    this.addSql(`create index provider_credentials_key_id_idx on provider_credentials (key_id);`);
    this.addSql(`
create table api_tokens (
  name text primary key check (name ~ '^[A-Za-z0-9._-]{1,64}$'),
  token_hash text not null unique,
  scope text not null check (scope in ('resolve', 'admin')),
  created_at timestamptz not null,
  created_by text,
  last_used_at timestamptz
);`);
    this.addSql(`
create table audit_events (
  id bigserial primary key,
  occurred_at timestamptz not null,
  actor text not null,
  action text not null,
  organization_id text,
  credential_id uuid,
  target text,
  source text,
  details jsonb not null default '{}'
);`);
    this.addSql(`create index audit_events_occurred_idx on audit_events (occurred_at desc, id desc);`);
    this.addSql(`create index audit_events_organization_idx on audit_events (organization_id, occurred_at desc, id desc);`);
    this.addSql(`create index audit_events_credential_idx on audit_events (credential_id, occurred_at desc, id desc);`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table audit_events, api_tokens, provider_credentials, teams, organizations;`);
  }
}
