import { Migration } from "@mikro-orm/migrations";

// When each portal session last proved who its account is: its sign-in (password, and the second factor when
// the account has one) or a later AdminService.Reauthenticate. Sensitive actions made for an account (tokens,
// accounts, the security policy, a key's api_base) need it within the last 10 minutes. Sessions that existed
// before count from their sign-in; sessions the previous version opens count from their opening. Append-only: never edit a landed migration.
export class Migration20261206181000_session_authentication extends Migration {
  override async up(): Promise<void> {
    this.addSql(`alter table admin_sessions add column authenticated_at timestamptz;`);
    this.addSql(`update admin_sessions set authenticated_at = created_at;`);
    // The default keeps the previous version working during a rolling upgrade: its sign-ins insert sessions
    // without the column, and a session just opened was just authenticated (docs/operations/upgrade.md).
    this.addSql(`alter table admin_sessions alter column authenticated_at set default now(), alter column authenticated_at set not null;`);
  }

  override async down(): Promise<void> {
    this.addSql(`alter table admin_sessions drop column authenticated_at;`);
  }
}
