import { AUDIT_ACTIONS, type AuditAction } from "@provider-credentials/wire/audit-actions";
import { z } from "zod";
import { TOKEN_SCOPES } from "@provider-credentials/wire/auth";
import { PROVIDER_NAMES, type ProviderName } from "@provider-credentials/wire/providers";

/**
 * Request and response shapes of the API, in the REST API's snake_case. Inputs
 * are strict (an unknown field such as `apiKey` is refused, not ignored);
 * outputs list every field explicitly, so nothing else ever leaves.
 *
 * The portal checks types and sizes; the service owns the business rules
 * (id patterns, key prefixes, URL rules) and names the field in its errors.
 */

/** The registry's providers (@provider-credentials/wire/providers), as the REST API names them. */
export const PROVIDERS = PROVIDER_NAMES as unknown as readonly [ProviderName, ...ProviderName[]];
export type { ProviderName };

/** The largest page a list returns; larger `limit`s are capped to it. */
export const MAX_PAGE_SIZE = 200;

/** The largest value of the service's int32 fields (expected_version). */
const INT32_MAX = 2_147_483_647;

/**
 * A JSON number taken as it is. trpc-to-openapi coerces the top-level numbers
 * and booleans of every input (right for query strings, wrong for JSON bodies);
 * a pipe keeps `"3"` or `true` from becoming a number.
 */
const exactPositiveInteger = () => z.int().min(1).max(INT32_MAX).pipe(z.int());

/** A JSON boolean taken as it is: without the pipe, trpc-to-openapi's coercion would read `"false"` as true. */
const exactBoolean = () => z.boolean().pipe(z.boolean());

/** The largest weight a credential may have (SELECTION_STRATEGY_WEIGHTED). */
export const MAX_WEIGHT = 1000;
const weight = () =>
  z
    .int()
    .min(0)
    .max(MAX_WEIGHT)
    .pipe(z.int())
    .describe(`Relative share of calls under the \`weighted\` selection strategy, 0-${MAX_WEIGHT} (0: never picked by it).`);

const id = (what: string) => z.string().min(1).max(256).describe(what);
const provider = z.enum(PROVIDERS).describe("The LLM provider.");

export const KEY_CHECK_OUTCOMES = ["valid", "invalid_key", "no_permission", "rate_limited", "unreachable", "unexpected"] as const;
export type KeyCheckOutcomeName = (typeof KEY_CHECK_OUTCOMES)[number];

export const SELECTION_STRATEGIES = ["newest", "round_robin", "weighted"] as const;
export type SelectionStrategyName = (typeof SELECTION_STRATEGIES)[number];
const strategy = z
  .enum(SELECTION_STRATEGIES)
  .describe(
    "`newest`: the most recently activated healthy credential (the default); `round_robin`: the healthy credentials in turn; " +
      "`weighted`: a random healthy credential, in proportion to its `weight`.",
  );
const timestamp = z.iso.datetime({ offset: true });

export const organizationIdField = id("Organisation id: 1-64 of letters, digits, `.`, `_`, `-`.");
export const credentialIdField = id("Credential id (a UUID).");
export const teamIdField = id("Team id: 1-64 of letters, digits, `.`, `_`, `-`.");
export const tokenNameField = id("Token name: 1-64 of letters, digits, `.`, `_`, `-`.");

const paging = {
  limit: z.int().min(1).describe(`Page size: default 50; values above ${MAX_PAGE_SIZE} are capped to ${MAX_PAGE_SIZE}.`).optional(),
  cursor: z
    .string()
    .max(2048)
    .regex(/^[A-Za-z0-9_-]*$/, "is malformed; pass the next_cursor of the previous page unchanged")
    .describe("The `next_cursor` of the previous page; omit for the first page.")
    .optional(),
};

/** Numbered pages ("26-50 of 65"): how many to skip. */
export const offsetField = z
  .int()
  .min(0)
  .max(INT32_MAX)
  .describe("Skip this many matches (numbered pages: `limit` 25, `offset` 25 is the second page); default 0. Not with `cursor`.");

/** Offset paging: a page size and how many to skip. */
const offsetPaging = {
  limit: paging.limit,
  offset: offsetField.optional(),
};

const total = (what: string) => z.int().describe(what);

/** The most credentials one batch may change. */
export const MAX_BATCH_CREDENTIALS = 200;

/** The fleet views of a credential search. */
export const CREDENTIAL_VIEWS = ["failing", "rotation_due", "inactive"] as const;
export type CredentialViewName = (typeof CREDENTIAL_VIEWS)[number];

/** What a batch does to each credential. */
export const CREDENTIAL_ACTIONS = ["activate", "deactivate", "delete"] as const;
export type CredentialActionName = (typeof CREDENTIAL_ACTIONS)[number];

// ---------------------------------------------------------------- outputs

export const keyCheckOutput = z
  .object({
    outcome: z
      .enum(KEY_CHECK_OUTCOMES)
      .describe(
        "`valid`; `invalid_key` (the provider refused the key); `no_permission` (HTTP 403); `rate_limited` (HTTP 429); " +
          "`unreachable` (no answer: connection, DNS, TLS or the timeout); `unexpected` (any other answer).",
      ),
    http_status: z.int().nullable().describe("The provider's HTTP status; null when there was no answer."),
    latency_ms: z.int().describe("How long the check took, in milliseconds."),
    message: z.string().describe("A short explanation for people; never contains the key."),
    checked_at: timestamp,
  })
  .meta({ id: "KeyCheck", description: "The result of checking a key against its provider's model list." });

export const credentialOutput = z
  .object({
    credential_id: z.string(),
    organization_id: z.string(),
    provider,
    credential_name: z.string(),
    api_base: z.string().nullable().describe("Custom endpoint; null means the provider's default."),
    is_active: z.boolean(),
    key_hint: z.string().describe("The masked key: provider prefix and last 4 characters. The key itself is never returned."),
    version: z.int().describe("Optimistic-lock version; pass it as `expected_version` to refuse stale updates."),
    created_at: timestamp,
    updated_at: timestamp,
    created_by: z.string().nullable(),
    updated_by: z.string().nullable(),
    last_used_at: timestamp.nullable(),
    weight: z.int().describe(`Relative share of calls under the \`weighted\` selection strategy, 0-${MAX_WEIGHT}.`),
    use_count: z.int().describe("How many times ResolveKey handed it out; counted in batches, so it lags by up to about 10 seconds."),
    last_check: keyCheckOutput.nullable().describe("The last check against the provider; null if never checked."),
    failing: z
      .boolean()
      .describe(
        "Marked failing after consecutive authentication or quota failures reported by callers; ResolveKey skips it while a healthy credential exists.",
      ),
    failure_streak: z.int().describe("Consecutive authentication or quota failures reported since the last success."),
    key_set_at: timestamp.describe("When the key itself was set (created or replaced): the age rotation reminders go by."),
    rotation_due: z.boolean().describe("The key is older than the service's ROTATION_DAYS (default 90)."),
  })
  .meta({ id: "Credential", description: "A stored provider credential. Never carries the API key." });

export const credentialVerificationOutput = z
  .object({ check: keyCheckOutput, credential: credentialOutput })
  .meta({ id: "CredentialVerification", description: "What the check found (also stored as the credential's `last_check`), and the credential after it." });

export const selectionPolicyOutput = z
  .object({
    organization_id: z.string(),
    provider,
    strategy,
    updated_at: timestamp.nullable().describe("When it was last set; null for the default."),
    updated_by: z.string().nullable().describe("Who set it; null for the default."),
  })
  .meta({ id: "SelectionPolicy", description: "How ResolveKey picks among an organisation's active credentials for one provider." });

export const selectionPolicyListOutput = z
  .object({ organization_id: z.string(), policies: z.array(selectionPolicyOutput).describe("One per provider, in provider order.") })
  .meta({ id: "SelectionPolicyList" });

export const credentialListOutput = z
  .object({
    organization_id: z.string(),
    credentials: z.array(credentialOutput),
    next_cursor: z.string().nullable().describe("Pass as `cursor` for the next page; null on the last page."),
    total: total("How many credentials match the filters, on every page."),
  })
  .meta({ id: "CredentialList" });

export const organizationRefOutput = z.object({ organization_id: z.string(), name: z.string() }).meta({ id: "OrganizationRef" });

export const credentialSearchOutput = z
  .object({
    credentials: z.array(credentialOutput).describe("The page of matches: by organisation id, provider, name, then id."),
    total: total("How many credentials match in all."),
    organizations: z.array(organizationRefOutput).describe("The organisations of the credentials on this page, for their names."),
  })
  .meta({ id: "CredentialSearch" });

export const credentialBatchOutput = z
  .object({ credentials: z.array(credentialOutput).describe("Each credential after the change (as it was, for a deletion), in the order asked.") })
  .meta({ id: "CredentialBatch" });

export const organizationOutput = z
  .object({ organization_id: z.string(), name: z.string(), created_at: timestamp, updated_at: timestamp })
  .meta({ id: "Organization" });

export const organizationListOutput = z
  .object({
    organizations: z.array(organizationOutput),
    next_cursor: z.string().nullable(),
    total: total("How many organisations match `q` (of those the caller may read)."),
  })
  .meta({ id: "OrganizationList" });

export const uncoveredOrganizationOutput = z
  .object({
    organization_id: z.string(),
    name: z.string(),
    providers: z.array(provider).describe("The providers it has no active credential for, and the service no environment fallback for."),
  })
  .meta({ id: "UncoveredOrganization" });

export const uncoveredOrganizationListOutput = z
  .object({ organizations: z.array(uncoveredOrganizationOutput).describe("By organisation id."), total: total("How many organisations are uncovered in all.") })
  .meta({ id: "UncoveredOrganizationList" });

export const offboardedOrganizationOutput = z
  .object({
    organization_id: z.string(),
    deleted: z.literal(true),
    deleted_credentials: z.int().describe("How many credentials were deleted with it."),
    deleted_teams: z.int().describe("How many teams were deleted with it."),
  })
  .meta({ id: "OffboardedOrganization" });

export const teamOutput = z
  .object({ team_id: z.string(), organization_id: z.string(), name: z.string(), created_at: timestamp, updated_at: timestamp })
  .meta({ id: "Team" });

export const teamListOutput = z
  .object({ organization_id: z.string(), teams: z.array(teamOutput), next_cursor: z.string().nullable() })
  .meta({ id: "TeamList" });

export const auditEventOutput = z
  .object({
    event_id: z.string(),
    occurred_at: timestamp,
    actor: z.string().describe("`token:<name>`, an administrator's email, or `cli:<user>`."),
    action: z.string().describe("e.g. `credential.create`, `credential.deactivate`, `admin.sign_in`."),
    organization_id: z.string().nullable(),
    credential_id: z.string().nullable(),
    target: z.string().nullable(),
    source: z.string().nullable().describe("The caller's network address, when known."),
    details: z.record(z.string(), z.unknown()).describe("What changed (field names, hints, flags; never keys)."),
  })
  .meta({ id: "AuditEvent" });

export const auditEventListOutput = z.object({ events: z.array(auditEventOutput), next_cursor: z.string().nullable() }).meta({ id: "AuditEventList" });

const tokenScope = z
  .enum(TOKEN_SCOPES)
  .describe("`resolve`: ResolveKey, ReportKeyFailure and ReportKeySuccess; `admin`: every operation; `metrics`: the service's metrics port only.");

/** The most organisations one token or account may list. */
export const MAX_ORGANIZATIONS = 100;

/** The longest overlap of a rotation: one day. */
export const MAX_OVERLAP_SECONDS = 86_400;

const organizationsOutput = z.array(z.string()).nullable().describe("The organisations it is limited to; null: every organisation.");

export const apiTokenOutput = z
  .object({
    name: z.string(),
    scope: tokenScope,
    organization_ids: organizationsOutput,
    expires_at: timestamp.nullable().describe("When the token stops working; null: never."),
    prefix: z.string().describe("The token's first characters (`pct_` and six more): enough to tell which token a leaked secret is, never enough to use it."),
    created_at: timestamp,
    created_by: z.string().nullable(),
    last_used_at: timestamp.nullable(),
    previous_valid_until: timestamp.nullable().describe("After a rotation with an overlap: until when the previous secret still works; null otherwise."),
  })
  .meta({ id: "ApiToken", description: "An API token as listed: never the token itself." });

export const apiTokenListOutput = z.object({ tokens: z.array(apiTokenOutput) }).meta({ id: "ApiTokenList" });

export const createdApiTokenOutput = apiTokenOutput
  .extend({ token: z.string().describe("The token: shown only in this response. Store it now.") })
  .meta({ id: "CreatedApiToken" });

export const ACCOUNT_ROLES = ["owner", "editor", "viewer"] as const;
const accountRole = z
  .enum(ACCOUNT_ROLES)
  .describe("`owner`: everything, including accounts and tokens; `editor`: organisations' credentials, teams and selection strategies; `viewer`: read only.");

export const accountOutput = z
  .object({
    email: z.string(),
    role: accountRole,
    organization_ids: organizationsOutput,
    disabled: z.boolean().describe("A disabled account cannot sign in."),
    two_factor_enabled: z.boolean().describe("Whether the account signs in with a TOTP code after its password."),
    created_at: timestamp,
    last_sign_in_at: timestamp.nullable(),
  })
  .meta({ id: "Account", description: "A portal account. Never carries its password." });

export const accountListOutput = z.object({ accounts: z.array(accountOutput) }).meta({ id: "AccountList" });

export const createdAccountOutput = accountOutput
  .extend({
    password: z.string().nullable().describe("The generated one-time password when none was sent: shown only in this response. null when a password was sent."),
  })
  .meta({ id: "CreatedAccount" });

export const deletedAccountOutput = z
  .object({ email: z.string(), deleted: z.literal(true), sessions_ended: z.int().describe("How many live sessions were ended.") })
  .meta({ id: "DeletedAccount" });
export const accountSessionsEndedOutput = z
  .object({ email: z.string(), sessions_ended: z.int().describe("How many live sessions were ended.") })
  .meta({ id: "AccountSessionsEnded" });

export const deletedCredentialOutput = z.object({ credential_id: z.string(), deleted: z.literal(true) }).meta({ id: "DeletedCredential" });
export const deletedOrganizationOutput = z.object({ organization_id: z.string(), deleted: z.literal(true) }).meta({ id: "DeletedOrganization" });
export const deletedTeamOutput = z.object({ team_id: z.string(), deleted: z.literal(true) }).meta({ id: "DeletedTeam" });
export const revokedApiTokenOutput = z.object({ name: z.string(), revoked: z.literal(true) }).meta({ id: "RevokedApiToken" });

// ---------------------------------------------------------------- inputs

export const listCredentialsInput = z
  .object({
    organization_id: organizationIdField,
    provider: z.enum(PROVIDERS).describe("Only credentials for this provider.").optional(),
    active_only: z.stringbool().describe("Only active credentials: `true` or `false` (default).").optional(),
    rotation_due_only: z.stringbool().describe("Only credentials whose key is older than ROTATION_DAYS: `true` or `false` (default).").optional(),
    failing_only: z.stringbool().describe("Only credentials marked failing: `true` or `false` (default).").optional(),
    ...paging,
    offset: offsetField.optional(),
  })
  .strict();

export const searchCredentialsInput = z
  .object({
    q: z
      .string()
      .max(200)
      .describe("Text to find, ignoring case: part of a credential's name, its key hint, its organisation's id or name, or a whole credential id.")
      .optional(),
    view: z.enum(CREDENTIAL_VIEWS).describe("Only `failing` credentials, those whose key is `rotation_due`, or `inactive` ones; omitted: all.").optional(),
    provider: z.enum(PROVIDERS).describe("Only credentials for this provider.").optional(),
    organization_id: organizationIdField.describe("Only this organisation's credentials.").optional(),
    ...offsetPaging,
  })
  .strict();

export const batchCredentialsInput = z
  .object({
    action: z.enum(CREDENTIAL_ACTIONS).describe("What to do to each credential; `delete` is permanent."),
    credential_ids: z
      .array(credentialIdField)
      .min(1)
      .max(MAX_BATCH_CREDENTIALS)
      .describe(
        `1-${MAX_BATCH_CREDENTIALS} distinct credential ids. All change, or none (404 naming the first unknown one, 403 for one outside your organisations).`,
      ),
  })
  .strict();

export const credentialIdInput = z.object({ credential_id: credentialIdField }).strict();

export const createCredentialInput = z
  .object({
    organization_id: organizationIdField,
    provider,
    credential_name: z.string().max(1000).describe("1-200 characters, unique per organisation and provider (ignoring case)."),
    api_key: z.string().max(8192).describe("The provider API key. Stored encrypted; never returned."),
    api_base: z
      .string()
      .max(4096)
      .nullable()
      .describe(
        "Absolute http(s) URL of a custom endpoint; null or omitted for the default. Not a loopback, link-local, private or unique-local address unless the service's API_BASE_ALLOW lists it.",
      )
      .optional(),
    weight: weight().describe(`Relative share of calls under the \`weighted\` selection strategy, 0-${MAX_WEIGHT}; default 1.`).optional(),
    verify: exactBoolean()
      .describe("Check the key with the provider first and store nothing unless it passes (else 409 naming `api_key`). Default false.")
      .optional(),
  })
  .strict();

export const updateCredentialInput = z
  .object({
    credential_id: credentialIdField,
    credential_name: z.string().max(1000).describe("A new name.").optional(),
    api_key: z.string().max(8192).describe("A new key (rotation in place).").optional(),
    api_base: z
      .string()
      .max(4096)
      .nullable()
      .describe("A new custom endpoint; null or empty clears it. Changing it requires api_key in the same request.")
      .optional(),
    expected_version: exactPositiveInteger().describe("Apply only if the credential's version is still this (else 409).").optional(),
    weight: weight().describe(`A new weight, 0-${MAX_WEIGHT}.`).optional(),
    verify: exactBoolean()
      .describe(
        "When the update sets `api_key` or `api_base`: check the key (the new one, or the stored one against the new API base) with the provider first, " +
          "and change nothing unless it passes (else 409 naming `api_key`). Default false.",
      )
      .optional(),
  })
  .strict();

export const listSelectionStrategiesInput = z.object({ organization_id: organizationIdField }).strict();
export const setSelectionStrategyInput = z.object({ organization_id: organizationIdField, provider, strategy }).strict();

export const listOrganizationsInput = z
  .object({
    q: z.string().max(200).describe("Only organisations whose id or name contains this, ignoring case.").optional(),
    ...paging,
    offset: offsetField.optional(),
  })
  .strict();
export const organizationIdInput = z.object({ organization_id: organizationIdField }).strict();
export const listUncoveredOrganizationsInput = z
  .object({
    provider: z.enum(PROVIDERS).describe("Only this provider; omitted: every provider the service has no environment fallback for.").optional(),
    ...offsetPaging,
  })
  .strict();
export const offboardOrganizationInput = z
  .object({
    organization_id: organizationIdField,
    confirm_organization_id: z.string().max(256).describe("The organisation's id again, typed by hand: must equal `organization_id` exactly."),
  })
  .strict();
export const createOrganizationInput = z
  .object({ organization_id: organizationIdField, name: z.string().max(1000).describe("Display name, 1-200 characters.") })
  .strict();

export const listTeamsInput = z.object({ organization_id: organizationIdField, ...paging }).strict();
export const createTeamInput = z
  .object({
    organization_id: organizationIdField,
    team_id: teamIdField,
    name: z.string().max(1000).describe("Display name, 1-200 characters."),
  })
  .strict();
export const teamIdInput = z.object({ team_id: teamIdField }).strict();

export const listAuditEventsInput = z
  .object({
    organization_id: z.string().min(1).max(256).describe("Only events of this organisation.").optional(),
    credential_id: z.string().min(1).max(256).describe("Only events of this credential.").optional(),
    action: z
      .enum(Object.keys(AUDIT_ACTIONS) as [AuditAction, ...AuditAction[]])
      .describe("Only events with this action, e.g. `credential.update`.")
      .optional(),
    actor: z.string().min(1).max(128).describe("Only events whose actor starts with this, ignoring case: an email, or `token:gw`.").optional(),
    occurred_after: z.iso.datetime({ offset: true }).describe("Only events at or after this time (RFC 3339).").optional(),
    occurred_before: z.iso.datetime({ offset: true }).describe("Only events before this time (RFC 3339).").optional(),
    ...paging,
  })
  .strict();

export const noInput = z.object({}).strict();

/** A list of organisations (at least one; leave the field out, or send null, for every organisation). */
const organizationsInput = (what: string) =>
  z
    .array(organizationIdField)
    .min(1, "must list at least one organisation; leave it out (or send null) for every organisation")
    .max(MAX_ORGANIZATIONS)
    .nullable()
    .describe(what);

export const createApiTokenInput = z
  .object({
    name: tokenNameField,
    scope: tokenScope,
    organization_ids: organizationsInput(
      "The organisations the token may act on; omitted or null: every organisation (refused when the caller is itself limited).",
    ).optional(),
    expires_at: timestamp.nullable().describe("When the token stops working (in the future); omitted or null: never.").optional(),
  })
  .strict();
export const tokenNameInput = z.object({ name: tokenNameField }).strict();
export const rotateApiTokenInput = z
  .object({
    name: tokenNameField,
    overlap_seconds: z
      .int()
      .min(0)
      .max(MAX_OVERLAP_SECONDS)
      .pipe(z.int())
      .describe(`How long the previous secret keeps working, in seconds: 0 (the default: it stops at once) to ${MAX_OVERLAP_SECONDS}.`)
      .optional(),
  })
  .strict();

const emailField = z.string().min(1).max(320).describe("The account's sign-in email.");

export const accountEmailInput = z.object({ email: emailField }).strict();

export const createAccountInput = z
  .object({
    email: emailField,
    role: accountRole,
    organization_ids: organizationsInput(
      "The organisations the account may see and change; omitted or null: every organisation. Refused for an owner.",
    ).optional(),
    password: z.string().max(1024).describe("The password (at least 12 characters); omitted: the service generates one and returns it once.").optional(),
  })
  .strict();

export const updateAccountInput = z
  .object({
    email: emailField,
    role: accountRole.optional(),
    organization_ids: organizationsInput("A new list of organisations; null: every organisation.").optional(),
    disabled: exactBoolean().describe("`true` disables the account and ends its sessions; `false` enables it again.").optional(),
  })
  .strict();
