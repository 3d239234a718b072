// The portal's production entry: `node portal/server.js` (after `npm run build:portal`).
// Checks the environment against the portal's settings (src/lib/server/settings.js), maps
// PORTAL_PORT to the port, listens on 127.0.0.1 unless HOST says otherwise, adds the security
// headers to every response (static files included), and stops cleanly on SIGTERM.
/* global process, URL, setTimeout */
import http from "node:http";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { createPortalLogger } from "./src/lib/server/log.js";
import { DEFAULT_SERVICE_URL, loadPortalSettings, PORTAL_SECRET_SETTINGS } from "./src/lib/server/settings.js";
import { applySecretFiles } from "./src/lib/server/secret-files.js";

const buildDir = fileURLToPath(new URL("./build/", import.meta.url));

let settings;
let secretFileWarnings;
try {
  // Secrets given as NAME_FILE (SERVICE_ADMIN_TOKEN_FILE) become NAME, for the app too (it reads process.env).
  secretFileWarnings = applySecretFiles(process.env, PORTAL_SECRET_SETTINGS);
  settings = loadPortalSettings(process.env);
} catch (error) {
  createPortalLogger("info").error({ code: "config" }, error instanceof Error ? error.message : String(error));
  process.exit(2);
}
const logger = createPortalLogger(settings.LOG_LEVEL);
for (const { message, variable, file, mode } of secretFileWarnings) logger.warn({ variable, file, mode }, message);

const listenPort = settings.PORTAL_PORT;
const host = settings.HOST ?? "127.0.0.1";
// adapter-node's own names for them.
process.env.PORT = String(listenPort);
process.env.HOST = host;

if (!existsSync(`${buildDir}handler.js`)) {
  logger.error("the portal is not built: run `npm run build:portal` (or `npm start`, which builds it when needed)");
  process.exit(1);
}
if (!settings.SERVICE_ADMIN_TOKEN) {
  logger.warn("SERVICE_ADMIN_TOKEN is not set: sign-in and the API cannot reach the credentials service");
}

// Baseline headers; SvelteKit's own (a page's Content-Security-Policy, say) replace them.
const BASELINE_HEADERS = {
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "strict-origin-when-cross-origin",
  "cross-origin-opener-policy": "same-origin",
  "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
};

// Without ORIGIN, adapter-node takes the origin from the Host header and the
// protocol from PROTOCOL_HEADER, defaulting to https; this server speaks plain
// http, so it says so itself (overwriting whatever a client sent in that header).
// Behind a TLS proxy set ORIGIN (or PROTOCOL_HEADER, HOST_HEADER) instead.
const OWN_PROTOCOL_HEADER = "x-provider-credentials-portal-protocol";
if (!settings.ORIGIN) delete process.env.ORIGIN;
const sayProtocol = !settings.ORIGIN && !settings.PROTOCOL_HEADER;
if (sayProtocol) process.env.PROTOCOL_HEADER = OWN_PROTOCOL_HEADER;

// adapter-node reads ORIGIN, PROTOCOL_HEADER, BODY_SIZE_LIMIT, ... when its handler is imported.
const { handler } = await import(`${buildDir}handler.js`);

const server = http.createServer((req, res) => {
  for (const [name, value] of Object.entries(BASELINE_HEADERS)) res.setHeader(name, value);
  if (sayProtocol) req.headers[OWN_PROTOCOL_HEADER] = "http";
  handler(req, res, () => {
    res.statusCode = 404;
    res.end("Not found");
  });
});

server.on("error", (error) => {
  logger.error({ code: error.code }, `the portal cannot listen on ${host}:${listenPort}: ${error.message}`);
  process.exit(1);
});

server.listen(listenPort, host, () => {
  const address = server.address();
  const shown = address.address.includes(":") ? `[${address.address}]` : address.address;
  const url = `http://${shown}:${address.port}`;
  logger.info({ url, serviceUrl: settings.CREDENTIALS_SERVICE_URL ?? DEFAULT_SERVICE_URL }, `portal listening on ${url}`);
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, "portal shutting down: finishing requests in flight");
  const timeoutMs = settings.SHUTDOWN_TIMEOUT_MS;
  const force = setTimeout(() => {
    server.closeAllConnections();
    logger.info("portal stopped (connections closed after the timeout)");
    process.exit(0);
  }, timeoutMs);
  force.unref();
  server.close(() => {
    logger.info("portal stopped");
    // The HTTP/2 connection to the service would keep the process alive: exit now.
    process.exit(0);
  });
  server.closeIdleConnections();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
