import type { LayoutServerLoad } from "./$types";

export const load: LayoutServerLoad = ({ locals }) => ({
  admin: locals.admin ? { email: locals.admin.email } : null,
});
