import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { AdminSchema, AdminService, ApiTokenSchema, type AuditEventSchema } from "@provider-credentials/wire/gen/admin_pb";
import type { AdminStore, AdminView } from "../admins/admin-store.js";
import type { TokenInfo, TokenStore } from "../auth/token-store.js";
import { listAuditEvents } from "../audit/audit-store.js";
import { pageSize, type PageTokens } from "../paging.js";
import { validateCredentialId, validateId } from "../credentials/validation.js";
import type { Orm } from "../db/orm.js";
import { invalid } from "../errors.js";
import { actorOf, auditActor } from "./context.js";

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
  });

const tokenMessage = (t: TokenInfo) =>
  create(ApiTokenSchema, {
    name: t.name,
    scope: t.scope,
    createdAt: timestampFromDate(t.createdAt),
    createdBy: t.createdBy ?? undefined,
    lastUsedAt: t.lastUsedAt ? timestampFromDate(t.lastUsedAt) : undefined,
  });

const SOURCE_PATTERN = /^[\x21-\x7e]{0,128}$/;

/** credentials.v1.AdminService: what the portal needs from the service besides credentials. */
export function createAdminService({ orm, admins, tokens, pages }: AdminServiceDeps): ServiceImpl<typeof AdminService> {
  return {
    async signIn(req) {
      if (!SOURCE_PATTERN.test(req.source)) throw invalid("source", "must be an address of at most 128 printable characters");
      const { token, session } = await admins.signIn(req.email, req.password, req.source || null, req.userAgent || null);
      return { sessionToken: token, admin: adminMessage(session.admin), expiresAt: timestampFromDate(session.expiresAt) };
    },

    async getSession(req) {
      const session = await admins.getSession(req.sessionToken);
      return { admin: adminMessage(session.admin), expiresAt: timestampFromDate(session.expiresAt) };
    },

    async signOut(req) {
      await admins.signOut(req.sessionToken);
      return {};
    },

    async listAdmins() {
      return { admins: (await admins.list()).map(adminMessage) };
    },

    async createApiToken(req, ctx) {
      const { token, info } = await tokens.create(req.name, req.scope, auditActor(actorOf(ctx.values)));
      return { token, apiToken: tokenMessage(info) };
    },

    async listApiTokens() {
      return { apiTokens: (await tokens.list()).map(tokenMessage) };
    },

    async revokeApiToken(req, ctx) {
      await tokens.revoke(req.name, auditActor(actorOf(ctx.values)));
      return {};
    },

    async listAuditEvents(req) {
      if (req.action !== undefined && !/^[a-z_]{1,32}\.[a-z_]{1,32}$/.test(req.action)) {
        throw invalid("action", "must look like credential.update or organization.delete");
      }
      const page = await listAuditEvents(orm.em.fork(), pages, {
        organizationId: req.organizationId === undefined ? undefined : validateId("organization_id", req.organizationId),
        credentialId: req.credentialId === undefined ? undefined : validateCredentialId(req.credentialId),
        action: req.action,
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
  };
}
