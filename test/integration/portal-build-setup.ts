import { ensurePortalBuild } from "../../portal/scripts/ensure-build.js";

/** Builds the portal once before the integration tier (only when portal/build is missing or stale). */
export default async function setup(): Promise<void> {
  await ensurePortalBuild((msg) => console.log(msg));
}
