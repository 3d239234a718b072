import { createHash } from "node:crypto";
import adapter from "@sveltejs/adapter-node";

/**
 * SvelteKit's route announcer (a visually hidden live region, written by
 * @sveltejs/kit/src/core/sync/write_root.js) carries this one style attribute;
 * it is allowed by its hash and nothing else inline is.
 */
const ANNOUNCER_STYLE =
  "position: absolute; left: 0; top: 0; clip: rect(0 0 0 0); clip-path: inset(50%); overflow: hidden; white-space: nowrap; width: 1px; height: 1px";
const announcerStyleHash = `sha256-${createHash("sha256").update(ANNOUNCER_STYLE).digest("base64")}`;

/**
 * Content-Security-Policy of every page. SvelteKit adds a nonce or hash for
 * its own inline bootstrap script ('auto' mode), so no 'unsafe-inline' or
 * 'unsafe-eval' is needed; nothing loads from another origin.
 */
const csp = {
  mode: "auto",
  directives: {
    "default-src": ["none"],
    "script-src": ["self"],
    "style-src": ["self"],
    "style-src-attr": ["unsafe-hashes", announcerStyleHash],
    "img-src": ["self", "data:"],
    "font-src": ["self"],
    "connect-src": ["self"],
    "manifest-src": ["self"],
    "form-action": ["self"],
    "base-uri": ["none"],
    "frame-ancestors": ["none"],
    "object-src": ["none"],
  },
};

/** @type {import('@sveltejs/kit').Config} */
const config = {
  compilerOptions: { runes: true },
  kit: {
    // Output in portal/build; the launcher runs it through portal/server.js.
    adapter: adapter({ out: "build", precompress: false }),
    csp,
    // SvelteKit's own origin check is off: it runs before the hooks and refused bearer-token API calls
    // with a form content type in plain text. hooks.server.ts refuses cross-origin changes to pages and
    // cookie-authenticated changes to /api instead (test/integration/portal-request-guards.test.ts).
    csrf: { trustedOrigins: ["*"] },
  },
};

export default config;
