import { Migration } from "@mikro-orm/migrations";

// Sign-in attempts being judged or judged wrong, for the sign-in limits. Append-only: never edit a landed migration.
export class Migration20261206000000_sign_in_attempts extends Migration {
  override async up(): Promise<void> {
    // A row is written before the password is judged and deleted when it was right: an attempt in flight counts
    // as a failure, so concurrent attempts cannot all be judged before any failure is counted.
    this.addSql(`
create table admin_sign_in_attempts (
  id uuid primary key,
  account text,
  source text not null,
  started_at timestamptz not null
);`);
    this.addSql(`create index admin_sign_in_attempts_account_idx on admin_sign_in_attempts (account, started_at);`);
    this.addSql(`create index admin_sign_in_attempts_source_idx on admin_sign_in_attempts (source, started_at);`);
    this.addSql(`create index admin_sign_in_attempts_started_idx on admin_sign_in_attempts (started_at);`);
  }

  override async down(): Promise<void> {
    this.addSql(`drop table admin_sign_in_attempts;`);
  }
}
