import { createHash, randomBytes, randomUUID } from "node:crypto";
import { inTransaction, type Orm } from "../db/orm.js";
import { isUniqueViolation, toDate } from "../db/errors.js";
import { ServiceError, invalid } from "../errors.js";
import { recordAudit } from "../audit/audit-store.js";
import type { Actor } from "../credentials/credential-store.js";
import { dummyPasswordHash, generatePassword, hashPassword, PASSWORD_MIN_LENGTH, verifyPassword } from "./passwords.js";

export interface AdminView {
  id: string;
  email: string;
  createdAt: Date;
  lastSignInAt: Date | null;
}

export interface SessionView {
  admin: AdminView;
  expiresAt: Date;
}

export const SESSION_IDLE_MS = 12 * 60 * 60 * 1000;
export const SIGN_IN_WINDOW_MS = 15 * 60 * 1000;
export const SIGN_IN_MAX_FAILURES = 10;

// Printable ASCII only: an email doubles as the actor name sent in a header on every change.
const EMAIL_PATTERN = /^[\x21-\x3f\x41-\x7e]{1,64}@[\x21-\x3f\x41-\x7e]{1,189}$/;

export function validateEmail(value: string): string {
  const email = value.trim().toLowerCase();
  if (email === "") throw invalid("email", "is required");
  if (email.length > 128 || !EMAIL_PATTERN.test(email)) {
    throw invalid("email", "must be an email address like admin@example.com (ASCII, at most 128 characters)");
  }
  return email;
}

export function validatePassword(password: string): string {
  if ([...password].length < PASSWORD_MIN_LENGTH) throw invalid("password", `must be at least ${PASSWORD_MIN_LENGTH} characters`);
  if (password.length > 1024) throw invalid("password", "must be at most 1024 characters");
  return password;
}

const hashSession = (token: string) => createHash("sha256").update(token, "utf8").digest("hex");

interface AdminRow {
  id: string;
  email: string;
  created_at: Date | string;
  last_sign_in_at: Date | string | null;
}

const view = (row: AdminRow): AdminView => ({
  id: row.id,
  email: row.email,
  createdAt: toDate(row.created_at),
  lastSignInAt: toDate(row.last_sign_in_at),
});

/**
 * Administrators and their server-side sessions. Passwords are scrypt hashes;
 * sessions are random 256-bit ids of which only a SHA-256 is stored; sign-in
 * failures are rate-limited per account and per address from the audit log,
 * so the limit holds across replicas.
 */
export class AdminStore {
  constructor(private readonly orm: Orm) {}

  private sql<T>(query: string, params: unknown[] = []): Promise<T[]> {
    return this.orm.em.getConnection().execute(query, params);
  }

  async count(): Promise<number> {
    const [row] = await this.sql<{ n: string }>("select count(*) as n from admin_users");
    return Number(row.n);
  }

  /** Creates an administrator; without a password one is generated. Returns the password (shown once). */
  async create(emailInput: string, passwordInput: string | undefined, by: Actor): Promise<{ admin: AdminView; password: string }> {
    const email = validateEmail(emailInput);
    const password = passwordInput === undefined ? generatePassword() : validatePassword(passwordInput);
    const now = new Date();
    const row: AdminRow = { id: randomUUID(), email, created_at: now, last_sign_in_at: null };
    const passwordHash = await hashPassword(password);
    try {
      await inTransaction(this.orm, async (em) => {
        await em
          .getConnection()
          .execute(
            "insert into admin_users (id, email, password_hash, created_at, updated_at) values (?, ?, ?, ?, ?)",
            [row.id, email, passwordHash, now, now],
            "run",
            em.getTransactionContext(),
          );
        await recordAudit(em, { ...by, action: "admin.create", target: email });
      });
    } catch (error) {
      if (isUniqueViolation(error)) {
        throw new ServiceError("already_exists", `email: an administrator with email "${email}" already exists`, "email");
      }
      throw error;
    }
    return { admin: view(row), password };
  }

  /** Sets a new password (generated when not given) and revokes every session of the administrator. */
  async resetPassword(emailInput: string, passwordInput: string | undefined, by: Actor): Promise<string> {
    const email = validateEmail(emailInput);
    const password = passwordInput === undefined ? generatePassword() : validatePassword(passwordInput);
    const passwordHash = await hashPassword(password);
    await inTransaction(this.orm, async (em) => {
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      const rows: Array<{ id: string }> = await conn.execute(
        "update admin_users set password_hash = ?, updated_at = now() where lower(email) = ? returning id",
        [passwordHash, email],
        "all",
        ctx,
      );
      if (rows.length === 0) throw new ServiceError("not_found", `no administrator with email "${email}"`);
      await conn.execute("update admin_sessions set revoked_at = now() where admin_id = ? and revoked_at is null", [rows[0].id], "run", ctx);
      await recordAudit(em, { ...by, action: "admin.reset_password", target: email });
    });
    return password;
  }

  async list(): Promise<AdminView[]> {
    return (await this.sql<AdminRow>("select id, email, created_at, last_sign_in_at from admin_users order by email")).map(view);
  }

  /** Checks the password and opens a session. Every failure looks the same to the caller. */
  async signIn(emailInput: string, password: string, source: string | null, userAgent: string | null): Promise<{ token: string; session: SessionView }> {
    const email = emailInput.trim().toLowerCase().slice(0, 254);
    // Only an email address can name an account. Anything else typed into the field (a password,
    // an API key) is neither looked up nor written to the audit log.
    const account = email.length <= 128 && EMAIL_PATTERN.test(email) ? email : null;
    await this.refuseWhenRateLimited(account, source);
    const [row] =
      account === null
        ? []
        : await this.sql<AdminRow & { password_hash: string }>(
            "select id, email, created_at, last_sign_in_at, password_hash from admin_users where lower(email) = ?",
            [account],
          );
    const ok = await verifyPassword(password.slice(0, 1024), row?.password_hash ?? (await dummyPasswordHash()));
    if (!row || !ok) {
      const actor = account ?? (email === "" ? "(empty)" : "(not an email address)");
      await inTransaction(this.orm, async (em) => {
        await recordAudit(em, { actor, action: "admin.sign_in_failed", target: account, source });
      });
      throw new ServiceError("unauthenticated", "invalid email or password");
    }
    const token = randomBytes(32).toString("base64url");
    const now = new Date();
    await inTransaction(this.orm, async (em) => {
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      await conn.execute(
        "insert into admin_sessions (id_hash, admin_id, created_at, last_seen_at, source, user_agent) values (?, ?, ?, ?, ?, ?)",
        [hashSession(token), row.id, now, now, source, userAgent?.slice(0, 512) ?? null],
        "run",
        ctx,
      );
      await conn.execute("update admin_users set last_sign_in_at = ? where id = ?", [now, row.id], "run", ctx);
      await recordAudit(em, { actor: row.email, action: "admin.sign_in", target: row.email, source });
    });
    return { token, session: { admin: view({ ...row, last_sign_in_at: now }), expiresAt: new Date(now.getTime() + SESSION_IDLE_MS) } };
  }

  /** The session's administrator, extending its idle expiry; unauthenticated when unknown, idle too long or revoked. */
  async getSession(token: string): Promise<SessionView> {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token)) throw new ServiceError("unauthenticated", "session expired or signed out");
    const [row] = await this.sql<AdminRow & { last_seen_at: string }>(
      `with s as (
         update admin_sessions set last_seen_at = now()
         where id_hash = ? and revoked_at is null and last_seen_at > now() - ? * interval '1 millisecond'
         returning admin_id, last_seen_at
       )
       select a.id, a.email, a.created_at, a.last_sign_in_at, s.last_seen_at from s join admin_users a on a.id = s.admin_id`,
      [hashSession(token), SESSION_IDLE_MS],
    );
    if (!row) throw new ServiceError("unauthenticated", "session expired or signed out");
    return { admin: view(row), expiresAt: new Date(toDate(row.last_seen_at).getTime() + SESSION_IDLE_MS) };
  }

  async signOut(token: string): Promise<void> {
    const rows = await this.sql<{ email: string; source: string | null }>(
      `update admin_sessions s set revoked_at = now() from admin_users a
       where s.id_hash = ? and s.revoked_at is null and a.id = s.admin_id returning a.email, s.source`,
      [hashSession(token)],
    );
    if (rows[0]) {
      await inTransaction(this.orm, async (em) => {
        await recordAudit(em, { actor: rows[0].email, action: "admin.sign_out", target: rows[0].email, source: rows[0].source });
      });
    }
  }

  /** Ten failures in fifteen minutes for the account, or for the address, closes the door until the oldest of them ages out. */
  private async refuseWhenRateLimited(email: string | null, source: string | null): Promise<void> {
    const tenthNewest = async (column: "target" | "source", value: string) => {
      const [row] = await this.sql<{ occurred_at: string }>(
        `select occurred_at from audit_events
         where action = 'admin.sign_in_failed' and ${column} = ? and occurred_at > now() - ? * interval '1 millisecond'
         order by occurred_at desc offset ? limit 1`,
        [value, SIGN_IN_WINDOW_MS, SIGN_IN_MAX_FAILURES - 1],
      );
      return row ? toDate(row.occurred_at) : undefined;
    };
    const blockers = [email ? await tenthNewest("target", email) : undefined, source ? await tenthNewest("source", source) : undefined].filter(
      (d): d is Date => d !== undefined,
    );
    if (blockers.length === 0) return;
    const until = Math.max(...blockers.map((d) => d.getTime() + SIGN_IN_WINDOW_MS));
    const seconds = Math.max(1, Math.ceil((until - Date.now()) / 1000));
    throw new ServiceError(
      "resource_exhausted",
      `too many failed sign-ins; try again in ${Math.ceil(seconds / 60)} minute${seconds > 60 ? "s" : ""}`,
      undefined,
      seconds,
      "TOO_MANY_SIGN_INS",
    );
  }
}
