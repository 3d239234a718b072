import { adminProcedure, router } from "../trpc.js";
import {
  accountEmailInput,
  accountListOutput,
  accountOutput,
  accountSessionsEndedOutput,
  createAccountInput,
  createdAccountOutput,
  deletedAccountOutput,
  noInput,
  updateAccountInput,
} from "../schemas.js";
import { accountJson } from "../../shapes.js";

const tags = ["portal accounts"];

/**
 * The email of a REST path as sent: `bob@example.com` or percent-encoded
 * (`bob%40example.com`), which the REST router passes on undecoded. An email
 * never contains `%` followed by two hex digits, so decoding is unambiguous.
 */
function pathEmail(email: string): string {
  if (!/%[0-9A-Fa-f]{2}/.test(email)) return email;
  try {
    return decodeURIComponent(email);
  } catch {
    return email;
  }
}

/**
 * Portal accounts. The service decides who may do what (owners only, today);
 * these procedures only translate.
 */
export const accountsRouter = router({
  list: adminProcedure
    .meta({
      openapi: {
        method: "GET",
        path: "/accounts",
        tags,
        summary: "List portal accounts",
        description: "Email, role, organisations, whether disabled, and last sign-in; never passwords.",
      },
    })
    .input(noInput)
    .output(accountListOutput)
    .query(async ({ ctx }) => {
      const { admins } = await ctx.service.admin.listAdmins({});
      return { accounts: admins.map(accountJson) };
    }),

  create: adminProcedure
    .meta({
      successStatus: 201,
      openapi: {
        method: "POST",
        path: "/accounts",
        tags,
        summary: "Create a portal account",
        description:
          "Without `password`, the service generates one and the response carries it: the only time it is shown. " +
          "An account limited to organisations cannot be `owner`. 409 if the email is taken.",
      },
    })
    .input(createAccountInput)
    .output(createdAccountOutput)
    .mutation(async ({ ctx, input }) => {
      const { admin, password } = await ctx.service.admin.createAdmin({
        email: input.email,
        role: input.role,
        organizationIds: input.organization_ids ?? [],
        password: input.password,
      });
      return { ...accountJson(admin!), password: password === "" ? null : password };
    }),

  update: adminProcedure
    .meta({
      openapi: {
        method: "PUT",
        path: "/accounts/{email}",
        tags,
        summary: "Change a portal account",
        description:
          "Fields left out are unchanged; `organization_ids: null` gives every organisation; `disabled: true` also ends its sessions. " +
          "The last enabled owner cannot be demoted or disabled. 404 if there is no such account.",
      },
    })
    .input(updateAccountInput)
    .output(accountOutput)
    .mutation(async ({ ctx, input }) => {
      const { admin } = await ctx.service.admin.updateAdmin({
        email: pathEmail(input.email),
        role: input.role,
        organizations: input.organization_ids === undefined ? undefined : { organizationIds: input.organization_ids ?? [] },
        disabled: input.disabled,
      });
      return accountJson(admin!);
    }),

  delete: adminProcedure
    .meta({
      openapi: {
        method: "DELETE",
        path: "/accounts/{email}",
        tags,
        summary: "Remove a portal account",
        description: "Also ends its sessions. The last enabled owner cannot be removed. 404 if there is no such account.",
      },
    })
    .input(accountEmailInput)
    .output(deletedAccountOutput)
    .mutation(async ({ ctx, input }) => {
      const email = pathEmail(input.email);
      const { sessionsEnded } = await ctx.service.admin.deleteAdmin({ email });
      return { email, deleted: true as const, sessions_ended: sessionsEnded };
    }),

  signOutEverywhere: adminProcedure
    .meta({
      openapi: {
        method: "POST",
        path: "/accounts/{email}/sign-out",
        tags,
        summary: "Sign a portal account out everywhere",
        description: "Ends every session of the account; no body needed. 404 if there is no such account.",
      },
    })
    .input(accountEmailInput)
    .output(accountSessionsEndedOutput)
    .mutation(async ({ ctx, input }) => {
      const email = pathEmail(input.email);
      const { sessionsEnded } = await ctx.service.admin.revokeAdminSessions({ email });
      return { email, sessions_ended: sessionsEnded };
    }),

  resetTwoFactor: adminProcedure
    .meta({
      openapi: {
        method: "POST",
        path: "/accounts/{email}/reset-two-factor",
        tags,
        summary: "Reset a portal account's two-factor sign-in",
        description:
          "Removes the account's second factor (its authenticator and recovery codes), for a lost device: it signs in with its password " +
          "and sets up two-factor sign-in again. Owners only; no body needed. 404 if there is no such account.",
      },
    })
    .input(accountEmailInput)
    .output(accountOutput)
    .mutation(async ({ ctx, input }) => {
      const { admin } = await ctx.service.admin.resetTwoFactor({ email: pathEmail(input.email) });
      return accountJson(admin!);
    }),
});
