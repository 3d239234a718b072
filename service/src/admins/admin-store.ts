import { createHash, randomBytes, randomUUID } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { EntityManager } from "@mikro-orm/postgresql";
import type { Orm } from "../db/orm.js";
import { runChange, type Change } from "../db/change.js";
import { toDate } from "../db/errors.js";
import { ServiceError, invalid } from "../errors.js";
import type { Actor } from "../credentials/credential-store.js";
import { validateId } from "../credentials/validation.js";
import type { AccountDirectory, AccountGrant, AccountRole } from "../auth/tokens.js";
import { dummyPasswordHash, generatePassword, hashPassword, PASSWORD_MAX_LENGTH, passwordProblem, verifyPassword } from "./passwords.js";
import { DecryptError, type Keyring } from "../keyring/index.js";
import { REAUTHENTICATION_WINDOW_MS } from "../auth/policy.js";
import {
  hashRecoveryCode,
  hashSecondFactorToken,
  isTotpCode,
  newRecoveryCodes,
  newSecondFactorToken,
  newTotpSecret,
  normalizeRecoveryCode,
  otpauthUri,
  PENDING_ENROLMENT_MS,
  SECOND_FACTOR_TOKEN_MAX_FAILURES,
  SECOND_FACTOR_TOKEN_MS,
  secretContext,
  totpStep,
} from "./two-factor.js";

export interface AdminView {
  id: string;
  email: string;
  createdAt: Date;
  lastSignInAt: Date | null;
  role: AccountRole;
  /** The organisations the account is limited to; null: every organisation. */
  organizations: string[] | null;
  disabled: boolean;
  /** Whether the account signs in with a TOTP code after its password. */
  twoFactorEnabled: boolean;
}

export interface SessionView {
  admin: AdminView;
  expiresAt: Date;
  /** The security policy requires a second factor and the account has none: it must enrol before anything else. */
  twoFactorEnrolmentRequired?: boolean;
}

/** SignIn's answer: a session, or (for an account with a second factor) the token CompleteSignIn takes with a code. */
export type SignInResult = { token: string; session: SessionView; secondFactorToken?: undefined } | { secondFactorToken: string };

/** A code judged right and not yet consumed: a TOTP code's time step, or a recovery code's hash. */
type CodeVerdict = { kind: "totp"; step: number; sealed: string; reseal: string | undefined } | { kind: "recovery"; hash: string };

/** The portal's sign-in rules. */
export interface SecurityPolicy {
  requireTwoFactor: boolean;
}

export const SESSION_IDLE_MS = 12 * 60 * 60 * 1000;
/** A session ends this long after sign-in however much it is used (ADMIN_SESSION_LIFETIME_HOURS). */
export const DEFAULT_SESSION_LIFETIME_HOURS = 7 * 24;
export const SIGN_IN_WINDOW_MS = 15 * 60 * 1000;
/** Failures (and attempts being judged) from one address, for any accounts, within the window. */
export const SIGN_IN_MAX_FAILURES = 10;
/** Failures for one account from all addresses within the window, after which only addresses without a failure for it are judged. */
export const SIGN_IN_ACCOUNT_MAX_FAILURES = 10;

export const ACCOUNT_ROLES: readonly AccountRole[] = ["owner", "editor", "viewer"];
/** The most organisations one account may be limited to. */
export const MAX_ACCOUNT_ORGANIZATIONS = 1000;
/** How long this replica trusts an account's role, organisations and disabled flag read for the policy (ms). */
export const ACCOUNT_CACHE_TTL_MS = 5_000;
/** The most accounts whose grants one replica keeps at once. */
const ACCOUNT_CACHE_MAX = 10_000;
const ROLE_RANK: Record<AccountRole, number> = { viewer: 0, editor: 1, owner: 2 };

/** Sign-in admissions in flight at once in one process: the others wait in memory, not holding database connections. */
const ADMISSIONS_AT_ONCE = 2;

// Advisory lock classes (the first key of pg_advisory_xact_lock(int, int)) serialising the sign-in limits.
const LOCK_SIGN_IN_ACCOUNT = 0x5349_4101;
const LOCK_SIGN_IN_ADDRESS = 0x5349_4102;

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

/** A password chosen for the account `email` (validated): refused, naming `field`, when too short or long, containing the email or too easy to guess. */
export function validatePassword(password: string, email: string, field = "password"): string {
  const problem = passwordProblem(password, email);
  if (problem !== undefined) throw invalid(field, problem);
  return password;
}

export function validateRole(value: string, field = "role"): AccountRole {
  if (value === "") throw invalid(field, "is required: owner, editor or viewer");
  const role = ACCOUNT_ROLES.find((r) => r === value);
  if (!role) throw invalid(field, "must be owner, editor or viewer");
  return role;
}

/** An account's organisations as given (syntax only, duplicates dropped): null when empty, meaning every organisation. */
export function validateOrganizationIds(values: readonly string[], field = "organization_ids"): string[] | null {
  if (values.length > MAX_ACCOUNT_ORGANIZATIONS) throw invalid(field, `must list at most ${MAX_ACCOUNT_ORGANIZATIONS} organisations`);
  const ids = values.map((v, i) => validateId(`${field}[${i}]`, v));
  return ids.length === 0 ? null : [...new Set(ids)];
}

/** What create and update call the request's fields in their errors (the RPC's by default; the CLI names its flags). */
export interface AccountFields {
  role?: string;
  organizations?: string;
}

export interface CreateAccountOptions {
  /** Default owner. */
  role?: string;
  /** Empty or null: every organisation (the only choice for an owner). */
  organizations?: readonly string[] | null;
  fields?: AccountFields;
}

export interface AccountChanges {
  role?: string;
  /** A new list (empty or null: every organisation); undefined leaves it as it is. */
  organizations?: readonly string[] | null;
  disabled?: boolean;
}

const hashSession = (token: string) => createHash("sha256").update(token, "utf8").digest("hex");

const ADMIN_COLUMNS = ["id", "email", "created_at", "last_sign_in_at", "role", "organization_ids", "disabled_at"];
const columns = (alias = "") => [...ADMIN_COLUMNS.map((c) => alias + c), `(${alias}totp_enabled_at is not null) as two_factor_enabled`].join(", ");
/** A JSON array of text bound as one parameter, as text[] (null stays null). */
const TEXT_ARRAY = "(select array_agg(x order by n) from jsonb_array_elements_text(?::jsonb) with ordinality as t(x, n))";
const textArray = (ids: readonly string[] | null) => (ids === null ? null : JSON.stringify(ids));

interface AdminRow {
  id: string;
  email: string;
  created_at: Date | string;
  last_sign_in_at: Date | string | null;
  role: AccountRole;
  organization_ids: string[] | null;
  disabled_at: Date | string | null;
  two_factor_enabled: boolean;
}

const view = (row: AdminRow): AdminView => ({
  id: row.id,
  email: row.email,
  createdAt: toDate(row.created_at),
  lastSignInAt: toDate(row.last_sign_in_at),
  role: row.role,
  organizations: row.organization_ids,
  disabled: row.disabled_at !== null,
  twoFactorEnabled: row.two_factor_enabled,
});

const ownerNeverLimited = (field: string) =>
  invalid(field, "an owner is never limited to organisations: leave the list empty, or choose the editor or viewer role");

/** Whether going from `before` to `after` takes any organisation away. */
function narrows(before: readonly string[] | null, after: readonly string[] | null): boolean {
  if (after === null) return false;
  if (before === null) return true;
  return before.some((id) => !after.includes(id));
}

/** The first of `ids` that names no organisation, refused naming its index in `field`. */
async function requireOrganizations(em: EntityManager, ids: readonly string[], all: readonly string[], field: string): Promise<void> {
  if (ids.length === 0) return;
  // Locked (key share) first, as API tokens do: none of them can be deleted, and its id created again, before this commits.
  await em
    .getConnection()
    .execute(
      "select id from organizations where id in (select jsonb_array_elements_text(?::jsonb)) for key share",
      [JSON.stringify(ids)],
      "all",
      em.getTransactionContext(),
    );
  const [missing]: Array<{ id: string }> = await em
    .getConnection()
    .execute(
      "select x as id from jsonb_array_elements_text(?::jsonb) with ordinality as t(x, n) where not exists (select 1 from organizations o where o.id = t.x) order by n limit 1",
      [JSON.stringify(ids)],
      "all",
      em.getTransactionContext(),
    );
  if (missing) {
    const name = `${field}[${all.indexOf(missing.id)}]`;
    throw new ServiceError("not_found", `${name}: organization "${missing.id}" not found`, name);
  }
}

const lastOwner = (email: string, what: string) =>
  new ServiceError(
    "failed_precondition",
    `email: "${email}" is the last enabled owner and cannot be ${what}; make another account an owner first`,
    "email",
    undefined,
    "LAST_OWNER",
  );

/**
 * Administrators (portal accounts) and their server-side sessions. Passwords are scrypt hashes;
 * sessions are random 256-bit ids of which only a SHA-256 is stored; sign-in
 * failures are rate-limited per account and per address, so the limit holds across replicas.
 * As an AccountDirectory it tells the policy an account's role, organisations and disabled flag,
 * cached for at most ACCOUNT_CACHE_TTL_MS (forgotten at once on this replica when changed here).
 */
export interface AdminStoreOptions {
  /** How long a session lasts after sign-in, used or not (ms; default DEFAULT_SESSION_LIFETIME_HOURS). */
  sessionLifetimeMs?: number;
  /** Seals and opens TOTP secrets; without it, two-factor sign-in is refused (FAILED_PRECONDITION). */
  keyring?: Keyring;
}

export class AdminStore implements AccountDirectory {
  private readonly sessionLifetimeMs: number;
  private readonly keyring: Keyring | undefined;
  private admissions = 0;
  private readonly admissionQueue: Array<() => void> = [];
  private readonly grants = new LRUCache<string, { grant: AccountGrant | undefined }>({ max: ACCOUNT_CACHE_MAX, ttl: ACCOUNT_CACHE_TTL_MS });
  /** Bumped by every change here: a read that started before it is not cached. */
  private grantGeneration = 0;

  constructor(
    private readonly orm: Orm,
    options: AdminStoreOptions = {},
  ) {
    this.sessionLifetimeMs = options.sessionLifetimeMs ?? DEFAULT_SESSION_LIFETIME_HOURS * 60 * 60 * 1000;
    this.keyring = options.keyring;
  }

  private sql<T>(query: string, params: unknown[] = []): Promise<T[]> {
    return this.orm.em.getConnection().execute(query, params);
  }

  /** AccountDirectory: the account `email` names as the policy needs it, or undefined when there is none. */
  account(emailInput: string): AccountGrant | undefined | Promise<AccountGrant | undefined> {
    const email = emailInput.trim().toLowerCase();
    if (email.length > 128 || !EMAIL_PATTERN.test(email)) return undefined;
    const cached = this.grants.get(email);
    if (cached) return cached.grant;
    return this.loadGrant(email);
  }

  private async loadGrant(email: string): Promise<AccountGrant | undefined> {
    const generation = this.grantGeneration;
    const [row] = await this.sql<Pick<AdminRow, "email" | "role" | "organization_ids" | "disabled_at"> & { must_enrol: boolean }>(
      `select email, role, organization_ids, disabled_at,
         (totp_secret is null and coalesce((select require_two_factor from security_policy), false)) as must_enrol
       from admin_users where lower(email) = ?`,
      [email],
    );
    const grant: AccountGrant | undefined = row
      ? Object.freeze({
          email: row.email,
          role: row.role,
          organizations: row.organization_ids === null ? null : new Set(row.organization_ids),
          disabled: row.disabled_at !== null,
          mustEnrol: row.must_enrol === true,
        })
      : undefined;
    if (generation === this.grantGeneration) this.grants.set(email, { grant });
    return grant;
  }

  /** Forgets what this replica cached about `email` (after a change commits, and as it starts). */
  private forget(email: string): void {
    this.grantGeneration += 1;
    this.grants.delete(email);
  }

  async count(): Promise<number> {
    const [row] = await this.sql<{ n: string }>("select count(*) as n from admin_users");
    return Number(row.n);
  }

  /**
   * Creates an account (an owner unless `options.role` says otherwise); without a password one is generated.
   * Returns the password (shown once). A chosen password that validatePassword refuses is INVALID_ARGUMENT naming
   * `passwordField`; organisations must exist and are refused for an owner.
   */
  async create(
    emailInput: string,
    passwordInput: string | undefined,
    by: Actor,
    passwordField = "password",
    options: CreateAccountOptions = {},
  ): Promise<{ admin: AdminView; password: string }> {
    const roleField = options.fields?.role ?? "role";
    const organizationsField = options.fields?.organizations ?? "organization_ids";
    const email = validateEmail(emailInput);
    const role = options.role === undefined ? "owner" : validateRole(options.role, roleField);
    const organizations = validateOrganizationIds(options.organizations ?? [], organizationsField);
    if (role === "owner" && organizations !== null) throw ownerNeverLimited(organizationsField);
    const password = passwordInput === undefined ? generatePassword() : validatePassword(passwordInput, email, passwordField);
    const now = new Date();
    const row: AdminRow = {
      id: randomUUID(),
      email,
      created_at: now,
      last_sign_in_at: null,
      role,
      organization_ids: organizations,
      disabled_at: null,
      two_factor_enabled: false,
    };
    const passwordHash = await hashPassword(password);
    try {
      await runChange(
        this.orm,
        async ({ em, audit }) => {
          if (organizations) await requireOrganizations(em, organizations, organizations, organizationsField);
          await em
            .getConnection()
            .execute(
              `insert into admin_users (id, email, password_hash, created_at, updated_at, role, organization_ids) values (?, ?, ?, ?, ?, ?, ${TEXT_ARRAY})`,
              [row.id, email, passwordHash, now, now, role, textArray(organizations)],
              "run",
              em.getTransactionContext(),
            );
          audit({ ...by, action: "admin.create", target: email, details: { role, organization_ids: organizations } });
        },
        { constraints: { unique: () => new ServiceError("already_exists", `email: an administrator with email "${email}" already exists`, "email") } },
      );
    } finally {
      this.forget(email);
    }
    return { admin: view(row), password };
  }

  /**
   * Changes an account's role, organisations or disabled flag. A change that takes rights away (a lower role,
   * fewer organisations, disabling) ends every session of the account. The last enabled owner cannot be
   * demoted or disabled: every account's row is locked first, so concurrent changes cannot leave none.
   */
  async update(emailInput: string, changes: AccountChanges, by: Actor, fields: AccountFields = {}): Promise<{ admin: AdminView; sessionsEnded: number }> {
    const roleField = fields.role ?? "role";
    const organizationsField = fields.organizations ?? "organization_ids";
    const email = validateEmail(emailInput);
    const newRole = changes.role === undefined ? undefined : validateRole(changes.role, roleField);
    const newOrganizations = changes.organizations === undefined ? undefined : validateOrganizationIds(changes.organizations ?? [], organizationsField);
    if (newRole === "owner" && newOrganizations !== undefined && newOrganizations !== null) throw ownerNeverLimited(organizationsField);
    try {
      return await runChange(this.orm, async ({ em, audit }) => {
        const conn = em.getConnection();
        const ctx = em.getTransactionContext();
        const rows: AdminRow[] = await conn.execute(`select ${columns()} from admin_users order by id for update`, [], "all", ctx);
        const current = rows.find((a) => a.email.toLowerCase() === email);
        if (!current) throw new ServiceError("not_found", `email: no administrator with email "${email}"`, "email");
        const role = newRole ?? current.role;
        const organizations = newOrganizations === undefined ? current.organization_ids : newOrganizations;
        const wasDisabled = current.disabled_at !== null;
        const disabled = changes.disabled ?? wasDisabled;
        if (role === "owner" && organizations !== null) {
          throw newOrganizations === undefined
            ? invalid(roleField, `"${email}" is limited to organisations and an owner never is: also give an empty list of organisations`)
            : ownerNeverLimited(organizationsField);
        }
        const otherOwners = rows.filter((a) => a.id !== current.id && a.role === "owner" && a.disabled_at === null).length;
        if (current.role === "owner" && !wasDisabled && otherOwners === 0) {
          if (role !== "owner") throw lastOwner(email, "demoted");
          if (disabled) throw lastOwner(email, "disabled");
        }
        const changed: Record<string, { from: unknown; to: unknown }> = {};
        if (role !== current.role) changed.role = { from: current.role, to: role };
        if (JSON.stringify(organizations) !== JSON.stringify(current.organization_ids)) {
          changed.organization_ids = { from: current.organization_ids, to: organizations };
        }
        if (disabled !== wasDisabled) changed.disabled = { from: wasDisabled, to: disabled };
        if (Object.keys(changed).length === 0) return { admin: view(current), sessionsEnded: 0 };
        if (newOrganizations) {
          const added = newOrganizations.filter((id) => !(current.organization_ids ?? []).includes(id));
          await requireOrganizations(em, added, newOrganizations, organizationsField);
        }
        const [row]: AdminRow[] = await conn.execute(
          `update admin_users set role = ?, organization_ids = ${TEXT_ARRAY},
             disabled_at = case when ? then coalesce(disabled_at, now()) else null end, updated_at = now()
           where id = ? returning ${columns()}`,
          [role, textArray(organizations), disabled, current.id],
          "all",
          ctx,
        );
        const reduces = ROLE_RANK[role] < ROLE_RANK[current.role] || (disabled && !wasDisabled) || narrows(current.organization_ids, organizations);
        let sessionsEnded = 0;
        if (reduces) {
          const ended: Array<{ id_hash: string }> = await conn.execute(
            "update admin_sessions set revoked_at = now() where admin_id = ? and revoked_at is null returning id_hash",
            [current.id],
            "all",
            ctx,
          );
          sessionsEnded = ended.length;
        }
        audit({ ...by, action: "admin.update", target: email, details: { ...changed, sessions_ended: sessionsEnded } });
        return { admin: view(row), sessionsEnded };
      });
    } finally {
      this.forget(email);
    }
  }

  /** Ends every session of the account, audited. */
  async revokeSessions(emailInput: string, by: Actor): Promise<{ sessionsEnded: number }> {
    const email = validateEmail(emailInput);
    return runChange(this.orm, async ({ em, audit }) => {
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      const [account]: Array<{ id: string }> = await conn.execute("select id from admin_users where lower(email) = ?", [email], "all", ctx);
      if (!account) throw new ServiceError("not_found", `email: no administrator with email "${email}"`, "email");
      const ended: Array<{ id_hash: string }> = await conn.execute(
        "update admin_sessions set revoked_at = now() where admin_id = ? and revoked_at is null returning id_hash",
        [account.id],
        "all",
        ctx,
      );
      audit({ ...by, action: "admin.sessions_revoked", target: email, details: { sessions_ended: ended.length } });
      return { sessionsEnded: ended.length };
    });
  }

  /** Sets a new password (generated when not given) and revokes every session of the administrator. */
  async resetPassword(emailInput: string, passwordInput: string | undefined, by: Actor, passwordField = "password"): Promise<string> {
    const email = validateEmail(emailInput);
    const password = passwordInput === undefined ? generatePassword() : validatePassword(passwordInput, email, passwordField);
    const passwordHash = await hashPassword(password);
    await runChange(this.orm, async ({ em, audit }) => {
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
      audit({ ...by, action: "admin.reset_password", target: email });
    });
    return password;
  }

  /**
   * The session's own account changes its password, given the current one. A wrong current password gets the
   * same answer as a failed sign-in and counts against the same limits. Every other session of the account ends.
   */
  async changePassword(sessionToken: string, currentPassword: string, newPassword: string, source: string | null): Promise<{ sessionsEnded: number }> {
    const { admin } = await this.getSession(sessionToken);
    validatePassword(newPassword, admin.email, "new_password");
    const attempt = await this.admitAttempt(admin.email, source ?? "");
    const [row] = await this.sql<{ password_hash: string }>("select password_hash from admin_users where id = ? and disabled_at is null", [admin.id]);
    const ok = await verifyPassword(currentPassword.slice(0, PASSWORD_MAX_LENGTH), row?.password_hash ?? (await dummyPasswordHash()));
    if (!row || !ok) {
      await runChange(this.orm, async ({ audit }) =>
        audit({ actor: admin.email, action: "admin.sign_in_failed", target: admin.email, source, details: { during: "change_password" } }),
      );
      throw new ServiceError("unauthenticated", "invalid email or password");
    }
    const passwordHash = await hashPassword(newPassword);
    return runChange(this.orm, async ({ em, audit }) => {
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      const updated: Array<{ id: string }> = await conn.execute(
        "update admin_users set password_hash = ?, updated_at = now() where id = ? and disabled_at is null returning id",
        [passwordHash, admin.id],
        "all",
        ctx,
      );
      if (updated.length === 0) throw new ServiceError("unauthenticated", "session expired or signed out");
      const ended: Array<{ id_hash: string }> = await conn.execute(
        "update admin_sessions set revoked_at = now() where admin_id = ? and id_hash <> ? and revoked_at is null returning id_hash",
        [admin.id, hashSession(sessionToken)],
        "all",
        ctx,
      );
      await conn.execute("delete from admin_sign_in_attempts where id = ?", [attempt], "run", ctx);
      audit({ actor: admin.email, action: "admin.password_changed", target: admin.email, source, details: { sessions_ended: ended.length } });
      return { sessionsEnded: ended.length };
    });
  }

  /**
   * Removes an administrator and ends every session of theirs, audited. Refused (FAILED_PRECONDITION) for the
   * last administrator and for the last enabled owner: every administrator's row is locked first, so concurrent
   * removals cannot leave none.
   */
  async remove(emailInput: string, by: Actor): Promise<{ sessionsEnded: number }> {
    const email = validateEmail(emailInput);
    try {
      return await runChange(this.orm, async ({ em, audit }) => {
        const conn = em.getConnection();
        const ctx = em.getTransactionContext();
        const admins: AdminRow[] = await conn.execute(`select ${columns()} from admin_users order by id for update`, [], "all", ctx);
        const target = admins.find((a) => a.email.toLowerCase() === email);
        if (!target) throw new ServiceError("not_found", `email: no administrator with email "${email}"`, "email");
        if (admins.length === 1) {
          throw new ServiceError(
            "failed_precondition",
            `email: "${email}" is the last administrator and cannot be removed; create another one first`,
            "email",
            undefined,
            "LAST_ADMINISTRATOR",
          );
        }
        const enabledOwner = (a: AdminRow) => a.role === "owner" && a.disabled_at === null;
        if (enabledOwner(target) && !admins.some((a) => a.id !== target.id && enabledOwner(a))) throw lastOwner(email, "removed");
        const ended: Array<{ id_hash: string }> = await conn.execute(
          "delete from admin_sessions where admin_id = ? and revoked_at is null returning id_hash",
          [target.id],
          "all",
          ctx,
        );
        await conn.execute("delete from admin_users where id = ?", [target.id], "run", ctx);
        audit({ ...by, action: "admin.remove", target: email, details: { sessions_ended: ended.length } });
        return { sessionsEnded: ended.length };
      });
    } finally {
      this.forget(email);
    }
  }

  async list(): Promise<AdminView[]> {
    return (await this.sql<AdminRow>(`select ${columns()} from admin_users order by email`)).map(view);
  }

  /** beginSignIn for callers that need a session at once: an account with a second factor is refused (FAILED_PRECONDITION). */
  async signIn(emailInput: string, password: string, source: string | null, userAgent: string | null): Promise<{ token: string; session: SessionView }> {
    const result = await this.beginSignIn(emailInput, password, source, userAgent);
    if (result.secondFactorToken !== undefined) {
      throw new ServiceError("failed_precondition", "this account signs in with a second factor: complete the sign-in with a code");
    }
    return result;
  }

  /**
   * Checks the password and opens a session; for an account with a second factor, gives instead a token for
   * completeSignIn (5 minutes, once). Every failure looks the same to the caller, a disabled account's too.
   */
  async beginSignIn(emailInput: string, password: string, source: string | null, userAgent: string | null): Promise<SignInResult> {
    const email = emailInput.trim().toLowerCase().slice(0, 254);
    // Only an email address can name an account. Anything else typed into the field (a password,
    // an API key) is neither looked up nor written to the audit log.
    const account = email.length <= 128 && EMAIL_PATTERN.test(email) ? email : null;
    const attempt = await this.admitAttempt(account, source ?? "");
    const [row] =
      account === null
        ? []
        : await this.sql<AdminRow & { password_hash: string }>(`select ${columns()}, password_hash from admin_users where lower(email) = ?`, [account]);
    const ok = await verifyPassword(password.slice(0, PASSWORD_MAX_LENGTH), row?.password_hash ?? (await dummyPasswordHash()));
    if (!row || !ok || row.disabled_at !== null) {
      // The attempt's row stays: it now counts as a failure until it leaves the window.
      const actor = account ?? (email === "" ? "(empty)" : "(not an email address)");
      const details = row && ok ? { account_disabled: true } : undefined;
      await runChange(this.orm, async ({ audit }) => audit({ actor, action: "admin.sign_in_failed", target: account, source, details }));
      throw new ServiceError("unauthenticated", "invalid email or password");
    }
    if (row.two_factor_enabled) {
      // The password was right (the attempt is no failure); the code is judged as an attempt of its own.
      const secondFactorToken = newSecondFactorToken();
      await runChange(this.orm, async ({ em }) => {
        const conn = em.getConnection();
        const ctx = em.getTransactionContext();
        await conn.execute("delete from admin_second_factor_tokens where expires_at < now() - interval '1 hour'", [], "run", ctx);
        await conn.execute(
          "insert into admin_second_factor_tokens (id_hash, admin_id, created_at, expires_at) values (?, ?, now(), now() + ? * interval '1 millisecond')",
          [hashSecondFactorToken(secondFactorToken), row.id, SECOND_FACTOR_TOKEN_MS],
          "run",
          ctx,
        );
        await conn.execute("delete from admin_sign_in_attempts where id = ?", [attempt], "run", ctx);
      });
      return { secondFactorToken };
    }
    return this.openSession(row, attempt, source, userAgent);
  }

  /** Opens a session for `row` whose sign-in (admitted as `attempt`) succeeded, with `more` done in the same transaction. */
  private async openSession(
    row: AdminRow,
    attempt: string,
    source: string | null,
    userAgent: string | null,
    details?: Record<string, unknown>,
    more?: (change: Change) => Promise<void>,
  ): Promise<{ token: string; session: SessionView }> {
    const token = randomBytes(32).toString("base64url");
    const now = new Date();
    await runChange(this.orm, async (change) => {
      const { em, audit } = change;
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      if (more) await more(change);
      await conn.execute(
        "insert into admin_sessions (id_hash, admin_id, created_at, last_seen_at, authenticated_at, source, user_agent) values (?, ?, ?, ?, ?, ?, ?)",
        [hashSession(token), row.id, now, now, now, source, userAgent?.slice(0, 512) ?? null],
        "run",
        ctx,
      );
      await conn.execute("update admin_users set last_sign_in_at = ? where id = ?", [now, row.id], "run", ctx);
      await conn.execute("delete from admin_sign_in_attempts where id = ?", [attempt], "run", ctx);
      audit({ actor: row.email, action: "admin.sign_in", target: row.email, source, details });
    });
    const expiresAt = new Date(now.getTime() + Math.min(SESSION_IDLE_MS, this.sessionLifetimeMs));
    return { token, session: { admin: view({ ...row, last_sign_in_at: now }), expiresAt } };
  }

  /**
   * The session's administrator, extending its idle expiry; unauthenticated when unknown, revoked, idle too long,
   * signed in longer ago than the session lifetime (however much it was used), or the account is disabled.
   */
  async getSession(token: string): Promise<SessionView> {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token)) throw new ServiceError("unauthenticated", "session expired or signed out");
    const [row] = await this.sql<AdminRow & { last_seen_at: string; session_created_at: string; require_two_factor: boolean | null }>(
      `with s as (
         update admin_sessions set last_seen_at = now()
         where id_hash = ? and revoked_at is null and last_seen_at > now() - ? * interval '1 millisecond'
           and created_at > now() - ? * interval '1 millisecond'
         returning admin_id, last_seen_at, created_at
       )
       select ${columns("a.")}, s.last_seen_at, s.created_at as session_created_at,
         (select require_two_factor from security_policy) as require_two_factor
       from s join admin_users a on a.id = s.admin_id
       where a.disabled_at is null`,
      [hashSession(token), SESSION_IDLE_MS, this.sessionLifetimeMs],
    );
    if (!row) throw new ServiceError("unauthenticated", "session expired or signed out");
    const idleEnd = toDate(row.last_seen_at).getTime() + SESSION_IDLE_MS;
    const lifetimeEnd = toDate(row.session_created_at).getTime() + this.sessionLifetimeMs;
    return {
      admin: view(row),
      expiresAt: new Date(Math.min(idleEnd, lifetimeEnd)),
      twoFactorEnrolmentRequired: row.require_two_factor === true && !row.two_factor_enabled,
    };
  }

  /**
   * For a sensitive action made for the account `email` in the session `token` (SESSION_HEADER): how long ago
   * (ms, by the database's clock) the session last proved who its account is (its sign-in, or reauthenticate).
   * Null when `token` is no live session of that account (unknown, revoked, expired, another account's, or the
   * account is disabled). Read each time, never cached: sensitive actions are rare.
   */
  async sessionAuthenticationAge(token: string, emailInput: string): Promise<number | null> {
    if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return null;
    const [row] = await this.sql<{ age_ms: string | number }>(
      `select extract(epoch from (now() - s.authenticated_at)) * 1000 as age_ms
       from admin_sessions s join admin_users a on a.id = s.admin_id
       where s.id_hash = ? and s.revoked_at is null and s.last_seen_at > now() - ? * interval '1 millisecond'
         and s.created_at > now() - ? * interval '1 millisecond' and lower(a.email) = ? and a.disabled_at is null`,
      [hashSession(token), SESSION_IDLE_MS, this.sessionLifetimeMs, emailInput.trim().toLowerCase()],
    );
    return row ? Math.max(0, Number(row.age_ms)) : null;
  }

  /**
   * The session's account proves who it is again, with its password or (an account with a second factor) a current
   * TOTP code or an unused recovery code: sensitive actions in this session need no new confirmation for the next
   * REAUTHENTICATION_WINDOW_MS. Admitted and counted like a sign-in: a wrong password or code is UNAUTHENTICATED
   * and audited as admin.sign_in_failed; success is audited as admin.reauthenticate.
   */
  async reauthenticate(sessionToken: string, passwordInput: string, codeInput: string, source: string | null): Promise<{ until: Date }> {
    const { admin } = await this.getSession(sessionToken);
    const password = passwordInput.slice(0, PASSWORD_MAX_LENGTH);
    const code = codeInput.trim().slice(0, 64);
    if (password === "" && code === "") {
      throw invalid(
        "password",
        admin.twoFactorEnabled ? "is required: give the account's password, or a code of its authenticator app as code" : "is required",
      );
    }
    if (code !== "" && !admin.twoFactorEnabled) throw invalid("code", "this account has no second factor: give its password instead");
    const attempt = await this.admitAttempt(admin.email, source ?? "");
    let passwordRight = true;
    if (password !== "") {
      const [row] = await this.sql<{ password_hash: string }>("select password_hash from admin_users where id = ? and disabled_at is null", [admin.id]);
      passwordRight = (await verifyPassword(password, row?.password_hash ?? (await dummyPasswordHash()))) && row !== undefined;
    }
    const verdict = code === "" ? undefined : await this.judgeCode(admin.id, code);
    const method = code === "" ? "password" : verdict?.kind === "recovery" ? "recovery_code" : "totp";
    const Wrong = new Error("wrong password or code, or the code was used concurrently");
    try {
      if (!passwordRight || (code !== "" && !verdict)) throw Wrong;
      const at = await runChange(this.orm, async (change) => {
        const conn = change.em.getConnection();
        const ctx = change.em.getTransactionContext();
        if (verdict && !(await this.useCode(change, admin, verdict, source))) throw Wrong;
        const [session]: Array<{ authenticated_at: Date | string }> = await conn.execute(
          "update admin_sessions set authenticated_at = now() where id_hash = ? and revoked_at is null returning authenticated_at",
          [hashSession(sessionToken)],
          "all",
          ctx,
        );
        if (!session) throw new ServiceError("unauthenticated", "session expired or signed out");
        await conn.execute("delete from admin_sign_in_attempts where id = ?", [attempt], "run", ctx);
        change.audit({ actor: admin.email, action: "admin.reauthenticate", target: admin.email, source, details: { with: method } });
        return toDate(session.authenticated_at);
      });
      return { until: new Date(at.getTime() + REAUTHENTICATION_WINDOW_MS) };
    } catch (error) {
      if (error !== Wrong) throw error;
      // The attempt's row stays: it counts as a failed sign-in until it leaves the window.
      await runChange(this.orm, async ({ audit }) =>
        audit({ actor: admin.email, action: "admin.sign_in_failed", target: admin.email, source, details: { during: "reauthenticate", with: method } }),
      );
      throw new ServiceError("unauthenticated", code === "" ? "invalid password" : "invalid password or code");
    }
  }

  /**
   * Removes an account's second factor (its authenticator's secret, a pending enrolment, its recovery codes and
   * any sign-in waiting for a code), audited as admin.two_factor_reset: it signs in with its password and enrols
   * again (at once when the security policy requires a second factor). NOT_FOUND when there is no such account.
   */
  async resetTwoFactor(emailInput: string, by: Actor): Promise<AdminView> {
    const email = validateEmail(emailInput);
    try {
      return await runChange(this.orm, async ({ em, audit }) => {
        const conn = em.getConnection();
        const ctx = em.getTransactionContext();
        const [current]: AdminRow[] = await conn.execute(`select ${columns()} from admin_users where lower(email) = ? for update`, [email], "all", ctx);
        if (!current) throw new ServiceError("not_found", `email: no administrator with email "${email}"`, "email");
        await conn.execute(
          `update admin_users set totp_secret = null, totp_enabled_at = null, totp_last_step = null, totp_pending_secret = null, totp_pending_at = null,
             updated_at = now() where id = ?`,
          [current.id],
          "run",
          ctx,
        );
        const codes: unknown[] = await conn.execute("delete from admin_recovery_codes where admin_id = ? returning code_hash", [current.id], "all", ctx);
        await conn.execute("delete from admin_second_factor_tokens where admin_id = ?", [current.id], "run", ctx);
        audit({
          ...by,
          action: "admin.two_factor_reset",
          target: email,
          details: { had_two_factor: current.two_factor_enabled, recovery_codes_removed: codes.length },
        });
        return view({ ...current, two_factor_enabled: false });
      });
    } finally {
      this.forget(email);
    }
  }

  /** The keyring that seals TOTP secrets, or FAILED_PRECONDITION when this store was made without one. */
  private sealer(): Keyring {
    if (!this.keyring) throw new ServiceError("failed_precondition", "two-factor sign-in is not available here (no keyring)");
    return this.keyring;
  }

  /**
   * Whether `code` is a current TOTP code or an unused recovery code of the account, judged without changing
   * anything: what useCode must then consume in the transaction that acts on it. Undefined when it is neither.
   */
  private async judgeCode(adminId: string, code: string): Promise<CodeVerdict | undefined> {
    const [row] = await this.sql<{ totp_secret: string | null }>("select totp_secret from admin_users where id = ?", [adminId]);
    if (!row?.totp_secret) return undefined;
    if (isTotpCode(code)) {
      const { plaintext, keyId } = this.sealer().openSecret(row.totp_secret, secretContext("totp_secret", adminId));
      const step = totpStep(plaintext, code);
      if (step === undefined) return undefined;
      // A secret sealed under a master key that is no longer the primary one is sealed again under the primary.
      const reseal = keyId === this.sealer().primaryKeyId ? undefined : this.sealer().sealSecret(plaintext, secretContext("totp_secret", adminId));
      return { kind: "totp", step, sealed: row.totp_secret, reseal };
    }
    const normalized = normalizeRecoveryCode(code);
    if (normalized === undefined) return undefined;
    const hash = hashRecoveryCode(adminId, normalized);
    const [used] = await this.sql<{ n: string }>("select count(*) as n from admin_recovery_codes where admin_id = ? and code_hash = ? and used_at is null", [
      adminId,
      hash,
    ]);
    return Number(used.n) === 1 ? { kind: "recovery", hash } : undefined;
  }

  /**
   * Consumes a judged code in the transaction: a TOTP code's step must be later than the last one accepted (a
   * code is never accepted twice, even within its 30 seconds), a recovery code must still be unused. False when
   * a concurrent call got there first.
   */
  private async useCode({ em, audit }: Change, admin: { id: string; email: string }, verdict: CodeVerdict, source: string | null): Promise<boolean> {
    const conn = em.getConnection();
    const ctx = em.getTransactionContext();
    if (verdict.kind === "totp") {
      const rows: unknown[] = await conn.execute(
        `update admin_users set totp_last_step = ?, totp_secret = coalesce(?, totp_secret)
         where id = ? and totp_secret = ? and (totp_last_step is null or totp_last_step < ?) returning id`,
        [verdict.step, verdict.reseal ?? null, admin.id, verdict.sealed, verdict.step],
        "all",
        ctx,
      );
      return rows.length === 1;
    }
    const rows: unknown[] = await conn.execute(
      "update admin_recovery_codes set used_at = now() where admin_id = ? and code_hash = ? and used_at is null returning code_hash",
      [admin.id, verdict.hash],
      "all",
      ctx,
    );
    if (rows.length !== 1) return false;
    const [left]: Array<{ n: string }> = await conn.execute(
      "select count(*) as n from admin_recovery_codes where admin_id = ? and used_at is null",
      [admin.id],
      "all",
      ctx,
    );
    audit({ actor: admin.email, action: "admin.recovery_code_used", target: admin.email, source, details: { recovery_codes_left: Number(left.n) } });
    return true;
  }

  /**
   * Completes a sign-in that beginSignIn answered with a second-factor token, given a TOTP code or a recovery code.
   * A wrong code, an unknown, used or expired token: UNAUTHENTICATED "invalid or expired code", admitted and counted
   * as a failed sign-in like a wrong password; a token takes at most SECOND_FACTOR_TOKEN_MAX_FAILURES wrong codes.
   */
  async completeSignIn(tokenInput: string, code: string, source: string | null, userAgent: string | null): Promise<{ token: string; session: SessionView }> {
    const tokenHash = /^[A-Za-z0-9_-]{43}$/.test(tokenInput) ? hashSecondFactorToken(tokenInput) : null;
    const [row] =
      tokenHash === null
        ? []
        : await this.sql<AdminRow>(
            `select ${columns("a.")} from admin_second_factor_tokens t join admin_users a on a.id = t.admin_id
             where t.id_hash = ? and t.used_at is null and t.expires_at > now() and a.disabled_at is null and a.totp_secret is not null`,
            [tokenHash],
          );
    const attempt = await this.admitAttempt(row?.email ?? null, source ?? "");
    const verdict = row ? await this.judgeCode(row.id, code.slice(0, 64)) : undefined;
    const failed = new ServiceError("unauthenticated", "invalid or expired code");
    const fail = async (): Promise<never> => {
      // The attempt's row stays: it counts as a failure until it leaves the window.
      await runChange(this.orm, async ({ em, audit }) => {
        if (tokenHash !== null) {
          await em
            .getConnection()
            .execute(
              "update admin_second_factor_tokens set failures = failures + 1, used_at = case when failures + 1 >= ? then now() else used_at end where id_hash = ?",
              [SECOND_FACTOR_TOKEN_MAX_FAILURES, tokenHash],
              "run",
              em.getTransactionContext(),
            );
        }
        audit({
          actor: row?.email ?? "(second factor)",
          action: "admin.sign_in_failed",
          target: row?.email ?? null,
          source,
          details: { during: "second_factor", ...(row ? {} : { token: "unknown, used or expired" }) },
        });
      });
      throw failed;
    };
    if (!row || !verdict) return fail();
    const Done = new Error("code or token used concurrently");
    try {
      return await this.openSession(row, attempt, source, userAgent, { second_factor: verdict.kind === "totp" ? "totp" : "recovery_code" }, async (change) => {
        const spent: unknown[] = await change.em
          .getConnection()
          .execute(
            "update admin_second_factor_tokens set used_at = now() where id_hash = ? and used_at is null and expires_at > now() returning id_hash",
            [tokenHash],
            "all",
            change.em.getTransactionContext(),
          );
        if (spent.length !== 1 || !(await this.useCode(change, row, verdict, source))) throw Done;
      });
    } catch (error) {
      if (error === Done) return fail();
      throw error;
    }
  }

  /**
   * Starts enrolling an authenticator for the session's own account: a fresh secret kept sealed as pending (it
   * replaces any earlier pending one) until confirmTwoFactorEnrolment. FAILED_PRECONDITION when already enrolled.
   */
  async beginTwoFactorEnrolment(sessionToken: string): Promise<{ otpauthUri: string; secret: string }> {
    const { admin } = await this.getSession(sessionToken);
    if (admin.twoFactorEnabled) throw new ServiceError("failed_precondition", "two-factor sign-in is already on for this account: turn it off first");
    const secret = newTotpSecret();
    const sealed = this.sealer().sealSecret(secret, secretContext("totp_pending_secret", admin.id));
    await runChange(this.orm, async ({ em }) => {
      await em
        .getConnection()
        .execute(
          "update admin_users set totp_pending_secret = ?, totp_pending_at = now() where id = ? and totp_secret is null",
          [sealed, admin.id],
          "run",
          em.getTransactionContext(),
        );
    });
    return { otpauthUri: otpauthUri(secret, admin.email), secret };
  }

  /**
   * Confirms the pending enrolment with a current code: the account signs in with a code from then on, and gets
   * ten recovery codes (returned this once; only salted hashes are kept). INVALID_ARGUMENT naming `code` when it
   * is wrong; FAILED_PRECONDITION when no enrolment was begun within the last hour, or one is already on.
   */
  async confirmTwoFactorEnrolment(sessionToken: string, code: string, source: string | null): Promise<{ recoveryCodes: string[] }> {
    const { admin } = await this.getSession(sessionToken);
    if (!isTotpCode(code)) throw invalid("code", "must be the 6-digit code the authenticator app shows");
    const [row] = await this.sql<{ totp_pending_secret: string | null; pending_fresh: boolean; totp_secret: string | null }>(
      "select totp_pending_secret, totp_pending_at > now() - ? * interval '1 millisecond' as pending_fresh, totp_secret from admin_users where id = ?",
      [PENDING_ENROLMENT_MS, admin.id],
    );
    if (row?.totp_secret) throw new ServiceError("failed_precondition", "two-factor sign-in is already on for this account");
    if (!row?.totp_pending_secret || !row.pending_fresh) {
      throw new ServiceError("failed_precondition", "no enrolment in progress (or it began more than an hour ago): begin the enrolment again");
    }
    const { plaintext: secret } = this.sealer().openSecret(row.totp_pending_secret, secretContext("totp_pending_secret", admin.id));
    const step = totpStep(secret, code);
    if (step === undefined) throw invalid("code", "is not the current code of the authenticator app: check the device's clock and try the next code");
    const sealed = this.sealer().sealSecret(secret, secretContext("totp_secret", admin.id));
    const recoveryCodes = newRecoveryCodes();
    await runChange(this.orm, async ({ em, audit }) => {
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      const updated: unknown[] = await conn.execute(
        `update admin_users set totp_secret = ?, totp_enabled_at = now(), totp_last_step = ?, totp_pending_secret = null, totp_pending_at = null
         where id = ? and totp_pending_secret = ? and totp_secret is null and disabled_at is null returning id`,
        [sealed, step, admin.id, row.totp_pending_secret],
        "all",
        ctx,
      );
      if (updated.length !== 1) throw new ServiceError("failed_precondition", "the enrolment changed meanwhile: begin it again");
      await conn.execute("delete from admin_recovery_codes where admin_id = ?", [admin.id], "run", ctx);
      for (const recoveryCode of recoveryCodes) {
        await conn.execute(
          "insert into admin_recovery_codes (admin_id, code_hash, created_at) values (?, ?, now())",
          [admin.id, hashRecoveryCode(admin.id, normalizeRecoveryCode(recoveryCode)!)],
          "run",
          ctx,
        );
      }
      audit({ actor: admin.email, action: "admin.two_factor_enabled", target: admin.email, source, details: { recovery_codes: recoveryCodes.length } });
    });
    this.forget(admin.email);
    return { recoveryCodes };
  }

  /**
   * Turns the session's own second factor off, given a current code or a recovery code (a wrong one is
   * INVALID_ARGUMENT naming `code`, counted as a failed sign-in). FAILED_PRECONDITION when the security policy
   * requires a second factor, or the account has none.
   */
  async disableTwoFactor(sessionToken: string, code: string, source: string | null): Promise<void> {
    const { admin } = await this.getSession(sessionToken);
    if ((await this.getSecurityPolicy()).requireTwoFactor) {
      throw new ServiceError("failed_precondition", "owners require two-factor sign-in for every account: it cannot be turned off");
    }
    if (!admin.twoFactorEnabled) throw new ServiceError("failed_precondition", "two-factor sign-in is not on for this account");
    const attempt = await this.admitAttempt(admin.email, source ?? "");
    const verdict = await this.judgeCode(admin.id, code.slice(0, 64));
    const Done = new Error("code used concurrently");
    try {
      if (!verdict) throw Done;
      await runChange(this.orm, async (change) => {
        const conn = change.em.getConnection();
        const ctx = change.em.getTransactionContext();
        if (!(await this.useCode(change, admin, verdict, source))) throw Done;
        await conn.execute(
          `update admin_users set totp_secret = null, totp_enabled_at = null, totp_last_step = null, totp_pending_secret = null, totp_pending_at = null
           where id = ?`,
          [admin.id],
          "run",
          ctx,
        );
        await conn.execute("delete from admin_recovery_codes where admin_id = ?", [admin.id], "run", ctx);
        await conn.execute("delete from admin_second_factor_tokens where admin_id = ?", [admin.id], "run", ctx);
        await conn.execute("delete from admin_sign_in_attempts where id = ?", [attempt], "run", ctx);
        change.audit({ actor: admin.email, action: "admin.two_factor_disabled", target: admin.email, source });
      });
    } catch (error) {
      if (error !== Done) throw error;
      await runChange(this.orm, async ({ audit }) =>
        audit({ actor: admin.email, action: "admin.sign_in_failed", target: admin.email, source, details: { during: "disable_two_factor" } }),
      );
      throw invalid("code", "is neither a current code of the authenticator app nor an unused recovery code");
    }
  }

  async getSecurityPolicy(): Promise<SecurityPolicy> {
    const [row] = await this.sql<{ require_two_factor: boolean }>("select require_two_factor from security_policy");
    return { requireTwoFactor: row?.require_two_factor === true };
  }

  /** Changes the security policy, audited (security_policy.set). Accounts without a second factor are then asked to enrol. */
  async setSecurityPolicy(policy: SecurityPolicy, by: Actor): Promise<SecurityPolicy> {
    try {
      return await this.writeSecurityPolicy(policy, by);
    } finally {
      // Whether each account must enrol depends on it.
      this.grantGeneration += 1;
      this.grants.clear();
    }
  }

  private writeSecurityPolicy(policy: SecurityPolicy, by: Actor): Promise<SecurityPolicy> {
    return runChange(this.orm, async ({ em, audit }) => {
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      const [before]: Array<{ require_two_factor: boolean }> = await conn.execute("select require_two_factor from security_policy for update", [], "all", ctx);
      await conn.execute(
        `insert into security_policy (id, require_two_factor, updated_at) values (true, ?, now())
         on conflict (id) do update set require_two_factor = excluded.require_two_factor, updated_at = now()`,
        [policy.requireTwoFactor],
        "run",
        ctx,
      );
      const [pending]: Array<{ n: string }> = await conn.execute(
        "select count(*) as n from admin_users where totp_secret is null and disabled_at is null",
        [],
        "all",
        ctx,
      );
      audit({
        ...by,
        action: "security_policy.set",
        details: {
          require_two_factor: { from: before?.require_two_factor === true, to: policy.requireTwoFactor },
          accounts_without_two_factor: Number(pending.n),
        },
      });
      return { requireTwoFactor: policy.requireTwoFactor };
    });
  }

  async signOut(token: string): Promise<void> {
    await runChange(this.orm, async ({ em, audit }) => {
      const [row]: Array<{ email: string; source: string | null }> = await em.getConnection().execute(
        `update admin_sessions s set revoked_at = now() from admin_users a
         where s.id_hash = ? and s.revoked_at is null and a.id = s.admin_id returning a.email, s.source`,
        [hashSession(token)],
        "all",
        em.getTransactionContext(),
      );
      if (row) audit({ actor: row.email, action: "admin.sign_out", target: row.email, source: row.source });
    });
  }

  /**
   * Admits one sign-in attempt under the limits, or refuses it (RESOURCE_EXHAUSTED with when to try again) without
   * counting it. An admitted attempt is a row of admin_sign_in_attempts, written before its password is judged and
   * deleted only when it was right, so an attempt being judged counts as a failure: counting and admitting happen
   * under advisory locks on the account and the address, so however many attempts arrive at once, no more are
   * judged than the limits allow. The limits, over the last SIGN_IN_WINDOW_MS:
   * - an address with SIGN_IN_MAX_FAILURES failures (for any accounts) is refused;
   * - an account with SIGN_IN_ACCOUNT_MAX_FAILURES failures (from any addresses) is refused to the addresses that
   *   have a failure for it, never to an address without one: knowing an administrator's email is not enough to
   *   lock them out.
   */
  private async admitAttempt(account: string | null, source: string): Promise<string> {
    const id = randomUUID();
    const refusedFor = await this.oneOfFewAdmissions(() => this.admitOrRefuse(id, account, source));
    if (refusedFor === undefined) return id;
    const seconds = Math.max(1, Math.ceil(refusedFor / 1000));
    throw new ServiceError(
      "resource_exhausted",
      `too many failed sign-ins; try again in ${Math.ceil(seconds / 60)} minute${seconds > 60 ? "s" : ""}`,
      undefined,
      seconds,
      "TOO_MANY_SIGN_INS",
    );
  }

  /**
   * Runs `admit` when fewer than ADMISSIONS_AT_ONCE run, in arrival order: a burst of sign-ins waits for the
   * advisory locks with at most that many of the pool's connections, so other calls keep theirs.
   */
  private async oneOfFewAdmissions<T>(admit: () => Promise<T>): Promise<T> {
    if (this.admissions >= ADMISSIONS_AT_ONCE) await new Promise<void>((resolve) => this.admissionQueue.push(resolve));
    else this.admissions += 1;
    try {
      return await admit();
    } finally {
      // The slot passes straight to the next in line, or is given back.
      const next = this.admissionQueue.shift();
      if (next) next();
      else this.admissions -= 1;
    }
  }

  /** In one transaction: how long the limits still refuse this attempt (ms), or undefined once its row is written. */
  private admitOrRefuse(id: string, account: string | null, source: string): Promise<number | undefined> {
    return runChange(this.orm, async ({ em }) => {
      const conn = em.getConnection();
      const ctx = em.getTransactionContext();
      // The account's lock before the address's, always: a transaction waiting for one holds no lock of its kind, so no deadlock.
      if (account !== null) await conn.execute("select pg_advisory_xact_lock(?, hashtext(?))", [LOCK_SIGN_IN_ACCOUNT, account], "all", ctx);
      await conn.execute("select pg_advisory_xact_lock(?, hashtext(?))", [LOCK_SIGN_IN_ADDRESS, source], "all", ctx);
      const window = "now() - ? * interval '1 millisecond'";
      const [state]: Array<{ now: Date | string; address_full: Date | string | null; account_full: Date | string | null; pair_latest: Date | string | null }> =
        await conn.execute(
          `select now() as now,
             (select started_at from admin_sign_in_attempts where source = ? and started_at > ${window}
              order by started_at desc offset ? limit 1) as address_full,
             (select started_at from admin_sign_in_attempts where account = ? and started_at > ${window}
              order by started_at desc offset ? limit 1) as account_full,
             (select max(started_at) from admin_sign_in_attempts where account = ? and source = ? and started_at > ${window}) as pair_latest`,
          [
            source,
            SIGN_IN_WINDOW_MS,
            SIGN_IN_MAX_FAILURES - 1,
            account,
            SIGN_IN_WINDOW_MS,
            SIGN_IN_ACCOUNT_MAX_FAILURES - 1,
            account,
            source,
            SIGN_IN_WINDOW_MS,
          ],
          "all",
          ctx,
        );
      const at = (value: Date | string | null) => (value === null ? undefined : toDate(value).getTime());
      // When each limit that holds lets go: as the failure that filled it leaves the window.
      const until = [
        at(state.address_full),
        state.account_full !== null && state.pair_latest !== null ? Math.min(at(state.account_full)!, at(state.pair_latest)!) : undefined,
      ].filter((t): t is number => t !== undefined);
      if (until.length > 0) return Math.max(...until) + SIGN_IN_WINDOW_MS - toDate(state.now).getTime();
      await conn.execute(
        `delete from admin_sign_in_attempts where id in (
           select id from admin_sign_in_attempts where started_at <= ${window} order by started_at limit 100 for update skip locked)`,
        [SIGN_IN_WINDOW_MS],
        "run",
        ctx,
      );
      await conn.execute("insert into admin_sign_in_attempts (id, account, source, started_at) values (?, ?, ?, now())", [id, account, source], "run", ctx);
      return undefined;
    });
  }
}

/** What resealTwoFactorSecrets did. */
export interface ResealReport {
  /** Sealed secrets (an authenticator's, or one being enrolled) sealed again under the primary key. */
  resealed: number;
  /** Secrets no configured key opens (or not sealed for their row): left untouched, reported by account. */
  failed: Array<{ email: string; column: "totp_secret" | "totp_pending_secret"; reason: string }>;
}

/**
 * Seals every account's TOTP secret, and any pending one, that is not under the keyring's primary key again
 * under it (part of `npm run rotate-master-key`), in one transaction with the accounts' rows locked. A secret
 * changed meanwhile (an enrolment, a reset) is left alone. Never returns or logs a secret.
 */
export async function resealTwoFactorSecrets(orm: Orm, keyring: Keyring): Promise<ResealReport> {
  const report: ResealReport = { resealed: 0, failed: [] };
  const current = `as1.${keyring.primaryKeyId}.`;
  await runChange(orm, async ({ em }) => {
    const conn = em.getConnection();
    const ctx = em.getTransactionContext();
    const rows: Array<{ id: string; email: string; totp_secret: string | null; totp_pending_secret: string | null }> = await conn.execute(
      `select id, email, totp_secret, totp_pending_secret from admin_users
       where (totp_secret is not null and totp_secret not like ?) or (totp_pending_secret is not null and totp_pending_secret not like ?)
       order by id for update`,
      [`${current}%`, `${current}%`],
      "all",
      ctx,
    );
    for (const row of rows) {
      for (const column of ["totp_secret", "totp_pending_secret"] as const) {
        const sealed = row[column];
        if (sealed === null || sealed.startsWith(current)) continue;
        let plaintext: string;
        try {
          plaintext = keyring.openSecret(sealed, secretContext(column, row.id)).plaintext;
        } catch (error) {
          if (!(error instanceof DecryptError)) throw error;
          report.failed.push({
            email: row.email,
            column,
            reason: "does not open with any configured key (sealed under a key MASTER_KEY no longer holds, or tampered)",
          });
          continue;
        }
        const resealed = keyring.sealSecret(plaintext, secretContext(column, row.id));
        await conn.execute(`update admin_users set ${column} = ? where id = ? and ${column} = ?`, [resealed, row.id, sealed], "run", ctx);
        report.resealed++;
      }
    }
  });
  return report;
}
