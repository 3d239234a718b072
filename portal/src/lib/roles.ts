/**
 * What the signed-in account's role lets the pages offer. Only buttons and
 * links depend on it: the credentials service decides every call itself, and
 * refuses whatever a page did not hide (or a hand-made request sends).
 */

export type AccountRole = "owner" | "editor" | "viewer";

/** The signed-in account as the pages see it (the layout's `admin`). */
export interface PageAccount {
  email: string;
  role: AccountRole;
  /** The organisations the account is limited to; null: every organisation. */
  organization_ids: string[] | null;
}

export const ROLE_LABELS: Record<AccountRole, string> = { owner: "Owner", editor: "Editor", viewer: "Viewer" };

export const ROLE_DESCRIPTIONS: Record<AccountRole, string> = {
  owner: "everything, including accounts and API tokens",
  editor: "organizations' credentials, teams and key selection",
  viewer: "read only",
};

/** Credentials, teams and key selection: owners and editors. */
export function canEdit(account: PageAccount | null | undefined): boolean {
  return account?.role === "owner" || account?.role === "editor";
}

/** Creating and deleting organizations: owners. */
export function canManageOrganizations(account: PageAccount | null | undefined): boolean {
  return account?.role === "owner";
}

/** Accounts and API tokens: owners only. */
export function isOwner(account: PageAccount | null | undefined): boolean {
  return account?.role === "owner";
}
