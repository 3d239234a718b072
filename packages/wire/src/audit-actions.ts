// Every action the service writes to the audit log, with how people read it. The service's
// AuditEvent.action is typed by this list, so an action written anywhere else does not compile;
// the portal's audit filter offers exactly these (test/integration/audit-log.test.ts).

export const AUDIT_ACTIONS = {
  "credential.create": "Credential added",
  "credential.update": "Credential changed",
  "credential.activate": "Credential activated",
  "credential.deactivate": "Credential deactivated",
  "credential.delete": "Credential deleted",
  "credential.roll": "Key rolled",
  "credential.verify": "Key checked with the provider",
  "credential.failing": "Key marked failing",
  "credential.recovered": "Key healthy again",
  "credential.import": "Credential imported",
  "credential.bind": "Legacy key bound",
  "selection_strategy.set": "Selection strategy set",
  "organization.create": "Organization created",
  "organization.delete": "Organization deleted",
  "organization.import": "Organization imported",
  "team.create": "Team created",
  "team.delete": "Team deleted",
  "team.import": "Team imported",
  "saas_litellm.import": "Import from SaaS LiteLLM",
  "token.create": "API token created",
  "token.revoke": "API token revoked",
  "token.rotate": "API token rotated",
  "admin.create": "Account created",
  "admin.update": "Account changed",
  "admin.remove": "Account removed",
  "admin.reset_password": "Password reset",
  "admin.password_changed": "Password changed",
  "admin.sessions_revoked": "Signed out everywhere",
  "admin.sign_in": "Signed in",
  "admin.sign_in_failed": "Sign-in failed",
  "admin.sign_out": "Signed out",
  "admin.two_factor_enabled": "Two-factor sign-in turned on",
  "admin.two_factor_disabled": "Two-factor sign-in turned off",
  "admin.recovery_code_used": "Recovery code used",
  "admin.two_factor_reset": "Two-factor sign-in reset",
  "admin.reauthenticate": "Sign-in confirmed again",
  "security_policy.set": "Sign-in rules changed",
  "master_key.rotate": "Master key rotated",
} as const satisfies Record<string, string>;

export type AuditAction = keyof typeof AUDIT_ACTIONS;

/** Whether a string is an action the service writes. */
export function isAuditAction(value: string): value is AuditAction {
  return Object.hasOwn(AUDIT_ACTIONS, value);
}
