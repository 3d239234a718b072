import { Migration } from "@mikro-orm/migrations";

// Append-only: never edit a migration that has landed; add a new one.
//
// API tokens limited to organisations, expiring, recognisable and rotatable (docs/security.md, "API tokens"):
// - organization_ids: the organisations a token may act on; null: every organisation (every existing token).
// - expires_at: when the token stops working; null: never (every existing token).
// - prefix: `pct_` and the secret's next six characters, shown in lists to match a leaked secret. Existing tokens
//   have none (only the hash was stored) and are listed without one.
// - previous_token_hash, previous_valid_until: after a rotation with an overlap, the previous secret's hash and
//   until when it still authenticates. Indexed: authentication looks a secret up in both columns.
// Replicas older than this migration ignore the new columns: they would accept a limited or expired token as an
// unlimited one. Create limited or expiring tokens only once every replica runs the version that ships it.
export class Migration20261206150000_token_limits extends Migration {
  override async up(): Promise<void> {
    await this.execute(`alter table api_tokens
  add column organization_ids text[] null,
  add column expires_at timestamptz null,
  add column prefix text null,
  add column previous_token_hash text null,
  add column previous_valid_until timestamptz null;`);
    await this.execute(`create index api_tokens_previous_token_hash_idx on api_tokens (previous_token_hash) where previous_token_hash is not null;`);
  }

  override async down(): Promise<void> {
    // Without the columns these tokens would act on every organisation, for ever: remove them instead.
    await this.execute(`delete from api_tokens where organization_ids is not null or expires_at is not null;`);
    await this.execute(`drop index if exists api_tokens_previous_token_hash_idx;`);
    await this.execute(`alter table api_tokens
  drop column if exists organization_ids,
  drop column if exists expires_at,
  drop column if exists prefix,
  drop column if exists previous_token_hash,
  drop column if exists previous_valid_until;`);
  }
}
