// The portal's production entry: `node portal/server.js` (after `npm run build:portal`).
// Maps PORTAL_PORT to the port, listens on 127.0.0.1 unless HOST says otherwise, adds the
// security headers to every response (static files included), and stops cleanly on SIGTERM.
/* global process, URL, setTimeout */
import http from "node:http";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const buildDir = fileURLToPath(new URL("./build/", import.meta.url));

function log(level, msg, fields = {}) {
  const line = JSON.stringify({ level, time: new Date().toISOString(), name: "portal", msg, ...fields });
  (level === "error" ? process.stderr : process.stdout).write(`${line}\n`);
}

function port(value, fallback) {
  if (value === undefined || value === "") return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    log("error", `PORTAL_PORT must be a port number (0-65535), got "${value}"`);
    process.exit(2);
  }
  return n;
}

const listenPort = port(process.env.PORTAL_PORT, 3000);
const host = process.env.HOST || "127.0.0.1";
process.env.PORT = String(listenPort);
process.env.HOST = host;

if (!existsSync(`${buildDir}handler.js`)) {
  log("error", "the portal is not built: run `npm run build:portal` (or `npm start`, which builds it when needed)");
  process.exit(1);
}
if (!process.env.SERVICE_ADMIN_TOKEN) {
  log("warn", "SERVICE_ADMIN_TOKEN is not set: sign-in and the API cannot reach the credentials service");
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
if (process.env.ORIGIN === "") delete process.env.ORIGIN;
const sayProtocol = !process.env.ORIGIN && !process.env.PROTOCOL_HEADER;
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
  log("error", `the portal cannot listen on ${host}:${listenPort}: ${error.message}`, { code: error.code });
  process.exit(1);
});

server.listen(listenPort, host, () => {
  const address = server.address();
  const shown = address.address.includes(":") ? `[${address.address}]` : address.address;
  const url = `http://${shown}:${address.port}`;
  log("info", `portal listening on ${url}`, { url, service: process.env.CREDENTIALS_SERVICE_URL || "http://127.0.0.1:50051" });
});

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  log("info", "portal shutting down: finishing requests in flight", { signal });
  const timeoutMs = Number(process.env.SHUTDOWN_TIMEOUT_MS) > 0 ? Number(process.env.SHUTDOWN_TIMEOUT_MS) : 10_000;
  const force = setTimeout(() => {
    server.closeAllConnections();
    log("info", "portal stopped (connections closed after the timeout)");
    process.exit(0);
  }, timeoutMs);
  force.unref();
  server.close(() => {
    log("info", "portal stopped");
    // The HTTP/2 connection to the service would keep the process alive: exit now.
    process.exit(0);
  });
  server.closeIdleConnections();
}
process.on("SIGTERM", () => shutdown("SIGTERM"));
process.on("SIGINT", () => shutdown("SIGINT"));
