import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { AdminSchema, AdminService, ApiTokenSchema, type AuditEventSchema } from "@provider-credentials/wire/gen/admin_pb";
import type { AdminStore, AdminView } from "../admins/admin-store.js";
import type { TokenInfo, TokenStore } from "../auth/token-store.js";
import type { Principal } from "../auth/tokens.js";
import { listAuditEvents } from "../audit/audit-store.js";
import { isAuditAction } from "@provider-credentials/wire/audit-actions";
import { pageSize, type PageTokens } from "../paging.js";
import { validateCredentialId, validateId } from "../credentials/validation.js";
import type { Orm } from "../db/orm.js";
import { invalid } from "../errors.js";
import { outside, requireOrganization, requireTokenOrganizations, withinLimit } from "../auth/policy.js";
import { actorOf, auditActor, principalOf } from "./context.js";

export interface AdminServiceDeps {
  orm: Orm;
  admins: AdminStore;
  tokens: TokenStore;
  /** Makes and checks the audit log's page tokens. */
  pages: PageTokens;
}

const adminMessage = (a: AdminView) =>
  create(AdminSchema, {
    adminId: a.id,
    email: a.email,
    createdAt: timestampFromDate(a.createdAt),
    lastSignInAt: a.lastSignInAt ? timestampFromDate(a.lastSignInAt) : undefined,
    role: a.role,
    organizationIds: a.organizations ?? [],
    disabled: a.disabled,
    twoFactorEnabled: a.twoFactorEnabled,
  });

const tokenMessage = (t: TokenInfo) =>
  create(ApiTokenSchema, {
    name: t.name,
    scope: t.scope,
    createdAt: timestampFromDate(t.createdAt),
    createdBy: t.createdBy ?? undefined,
    lastUsedAt: t.lastUsedAt ? timestampFromDate(t.lastUsedAt) : undefined,
    organizationIds: t.organizationIds ?? [],
    expiresAt: t.expiresAt ? timestampFromDate(t.expiresAt) : undefined,
    prefix: t.prefix ?? "",
    previousValidUntil: t.previousValidUntil ? timestampFromDate(t.previousValidUntil) : undefined,
  });

/** A caller limited to organisations manages only tokens limited to some of them; any other name (or none) is refused alike. */
async function requireManageableToken(tokens: TokenStore, principal: Principal, name: string): Promise<void> {
  if (principal.organizations === null) return;
  const token = (await tokens.list()).find((t) => t.name === name);
  if (!token || !withinLimit(principal.organizations, token.organizationIds)) throw outside("name", "token", name);
}

/** A time a filter may hold: between the years 1970 and 9999. */
function validTime(field: string, date: Date): Date {
  const time = date.getTime();
  if (!(time >= 0 && time < Date.UTC(10_000, 0, 1))) throw invalid(field, "must be a time between the years 1970 and 9999");
  return date;
}

const SOURCE_PATTERN = /^[\x21-\x7e]{0,128}$/;

/** credentials.v1.AdminService: what the portal needs from the service besides credentials. */
export function createAdminService({ orm, admins, tokens, pages }: AdminServiceDeps): ServiceImpl<typeof AdminService> {
  return {
    async signIn(req) {
      if (!SOURCE_PATTERN.test(req.source)) throw invalid("source", "must be an address of at most 128 printable characters");
      const result = await admins.beginSignIn(req.email, req.password, req.source || null, req.userAgent || null);
      if (result.secondFactorToken !== undefined) return { secondFactorToken: result.secondFactorToken };
      const { token, session } = result;
      return { sessionToken: token, admin: adminMessage(session.admin), expiresAt: timestampFromDate(session.expiresAt) };
    },

    async completeSignIn(req) {
      if (!SOURCE_PATTERN.test(req.source)) throw invalid("source", "must be an address of at most 128 printable characters");
      const { token, session } = await admins.completeSignIn(req.secondFactorToken, req.code, req.source || null, req.userAgent || null);
      return { sessionToken: token, admin: adminMessage(session.admin), expiresAt: timestampFromDate(session.expiresAt) };
    },

    async beginTwoFactorEnrolment(req) {
      return await admins.beginTwoFactorEnrolment(req.sessionToken);
    },

    async confirmTwoFactorEnrolment(req, ctx) {
      return await admins.confirmTwoFactorEnrolment(req.sessionToken, req.code, actorOf(ctx.values).source);
    },

    async disableTwoFactor(req, ctx) {
      await admins.disableTwoFactor(req.sessionToken, req.code, actorOf(ctx.values).source);
      return {};
    },

    async getSecurityPolicy() {
      return { policy: await admins.getSecurityPolicy() };
    },

    async setSecurityPolicy(req, ctx) {
      return { policy: await admins.setSecurityPolicy({ requireTwoFactor: req.requireTwoFactor }, actorOf(ctx.values)) };
    },

    async getSession(req) {
      const session = await admins.getSession(req.sessionToken);
      return {
        admin: adminMessage(session.admin),
        expiresAt: timestampFromDate(session.expiresAt),
        twoFactorEnrolmentRequired: session.twoFactorEnrolmentRequired === true,
      };
    },

    async signOut(req) {
      await admins.signOut(req.sessionToken);
      return {};
    },

    async listAdmins(_req, ctx) {
      const { organizations } = principalOf(ctx.values);
      return { admins: (await admins.list()).filter((a) => withinLimit(organizations, a.organizations)).map(adminMessage) };
    },

    async createAdmin(req, ctx) {
      const { admin, password } = await admins.create(req.email, req.password, actorOf(ctx.values), "password", {
        role: req.role,
        organizations: req.organizationIds,
      });
      return { admin: adminMessage(admin), password: req.password === undefined ? password : "" };
    },

    async updateAdmin(req, ctx) {
      const changes = { role: req.role, organizations: req.organizations?.organizationIds, disabled: req.disabled };
      const { admin } = await admins.update(req.email, changes, actorOf(ctx.values), { organizations: "organizations.organization_ids" });
      return { admin: adminMessage(admin) };
    },

    async deleteAdmin(req, ctx) {
      return await admins.remove(req.email, actorOf(ctx.values));
    },

    async revokeAdminSessions(req, ctx) {
      return await admins.revokeSessions(req.email, actorOf(ctx.values));
    },

    async changePassword(req, ctx) {
      await admins.changePassword(req.sessionToken, req.currentPassword, req.newPassword, actorOf(ctx.values).source);
      return {};
    },

    async createApiToken(req, ctx) {
      requireTokenOrganizations(principalOf(ctx.values), req.organizationIds);
      const { token, info } = await tokens.create(req.name, req.scope, auditActor(actorOf(ctx.values)), {
        organizationIds: req.organizationIds,
        expiresAt: req.expiresAt ? timestampDate(req.expiresAt) : null,
      });
      return { token, apiToken: tokenMessage(info) };
    },

    async listApiTokens(_req, ctx) {
      const { organizations } = principalOf(ctx.values);
      return { apiTokens: (await tokens.list()).filter((t) => withinLimit(organizations, t.organizationIds)).map(tokenMessage) };
    },

    async revokeApiToken(req, ctx) {
      await requireManageableToken(tokens, principalOf(ctx.values), req.name);
      await tokens.revoke(req.name, auditActor(actorOf(ctx.values)));
      return {};
    },

    async rotateApiToken(req, ctx) {
      await requireManageableToken(tokens, principalOf(ctx.values), req.name);
      const { token, info } = await tokens.rotate(req.name, req.overlapSeconds, auditActor(actorOf(ctx.values)));
      return { token, apiToken: tokenMessage(info) };
    },

    async listAuditEvents(req, ctx) {
      const { organizations } = principalOf(ctx.values);
      if (req.organizationId !== undefined) requireOrganization(principalOf(ctx.values), validateId("organization_id", req.organizationId));
      if (req.action !== undefined && !isAuditAction(req.action)) {
        throw invalid("action", "must be one of the actions the audit log records, e.g. credential.update or organization.delete (see AuditEvent.action)");
      }
      if (req.actor !== undefined && !/^[\x20-\x7e]{1,128}$/.test(req.actor)) throw invalid("actor", "must be 1-128 printable ASCII characters");
      const occurredAfter = req.occurredAfter ? validTime("occurred_after", timestampDate(req.occurredAfter)) : undefined;
      const occurredBefore = req.occurredBefore ? validTime("occurred_before", timestampDate(req.occurredBefore)) : undefined;
      if (occurredAfter && occurredBefore && occurredAfter >= occurredBefore) throw invalid("occurred_before", "must be later than occurred_after");
      const page = await listAuditEvents(orm.em.fork(), pages, {
        organizationId: req.organizationId === undefined ? undefined : validateId("organization_id", req.organizationId),
        credentialId: req.credentialId === undefined ? undefined : validateCredentialId(req.credentialId),
        organizationIds: organizations,
        action: req.action,
        actorPrefix: req.actor,
        occurredAfter,
        occurredBefore,
        limit: pageSize(req.pageSize),
        pageToken: req.pageToken,
      });
      const events: MessageInitShape<typeof AuditEventSchema>[] = page.events.map((e) => ({
        eventId: e.id,
        occurredAt: timestampFromDate(e.occurredAt),
        actor: e.actor,
        action: e.action,
        organizationId: e.organizationId ?? undefined,
        credentialId: e.credentialId ?? undefined,
        target: e.target ?? undefined,
        source: e.source ?? undefined,
        detailsJson: JSON.stringify(e.details),
      }));
      return { events, nextPageToken: page.nextPageToken };
    },

    async reauthenticate(req, ctx) {
      const { until } = await admins.reauthenticate(req.sessionToken, req.password, req.code, actorOf(ctx.values).source);
      return { reauthenticatedUntil: timestampFromDate(until) };
    },

    async resetTwoFactor(req, ctx) {
      return { admin: adminMessage(await admins.resetTwoFactor(req.email, actorOf(ctx.values))) };
    },
  };
}
