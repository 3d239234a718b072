import { Migration } from "@mikro-orm/migrations";

// Append-only: never edit a migration that has landed; add a new one.
//
// A third token scope, `metrics`: it may scrape METRICS_PORT and call no RPC. Replicas older than
// this migration let any scope but `admin` call ResolveKey: create `metrics` tokens only once
// every replica runs the version that ships it (docs/security.md).
export class Migration20261206140000_metrics_scope extends Migration {
  override async up(): Promise<void> {
    await this.execute(`alter table api_tokens drop constraint if exists api_tokens_scope_check;`);
    await this.execute(`alter table api_tokens add constraint api_tokens_scope_check check (scope in ('resolve', 'admin', 'metrics'));`);
  }

  override async down(): Promise<void> {
    await this.execute(`delete from api_tokens where scope = 'metrics';`);
    await this.execute(`alter table api_tokens drop constraint if exists api_tokens_scope_check;`);
    await this.execute(`alter table api_tokens add constraint api_tokens_scope_check check (scope in ('resolve', 'admin'));`);
  }
}
