import { Migration } from "@mikro-orm/migrations";

// Append-only: never edit a migration that has landed; add a new one.
//
// Key health and load spreading: the last check against the provider, the
// failure streak reported by callers, weights and per-organisation selection
// strategies, batched use counts, and the time the key itself was set (for
// rotation reminders).
export class Migration20261127010000_key_health extends Migration {
  override async up(): Promise<void> {
    this.addSql(`
alter table provider_credentials
  add column weight integer not null default 1 check (weight between 0 and 1000),
  add column use_count bigint not null default 0,
  add column key_set_at timestamptz not null default now(),
  add column check_outcome text check (check_outcome in ('valid', 'invalid_key', 'no_permission', 'rate_limited', 'unreachable', 'unexpected')),
  add column check_http_status integer,
  add column check_latency_ms integer,
  add column check_message text,
  add column checked_at timestamptz,
  add column failure_streak integer not null default 0,
  add column failing_since timestamptz;`);
    this.addSql(`update provider_credentials set key_set_at = created_at;`);
    this.addSql(`create index provider_credentials_key_set_idx on provider_credentials (organization_id, key_set_at);`);
    this.addSql(`
create table selection_strategies (
  organization_id text not null references organizations (id) on delete cascade,
  provider text not null check (provider in ('openai', 'anthropic', 'gemini', 'fireworks')),
  strategy text not null check (strategy in ('newest', 'round_robin', 'weighted')),
  updated_at timestamptz not null,
  updated_by text,
  primary key (organization_id, provider)
);`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table selection_strategies;`);
    this.addSql(`
alter table provider_credentials
  drop column weight, drop column use_count, drop column key_set_at, drop column check_outcome,
  drop column check_http_status, drop column check_latency_ms, drop column check_message,
  drop column checked_at, drop column failure_streak, drop column failing_since;`);
  }
}
