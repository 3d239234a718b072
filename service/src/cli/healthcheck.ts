// `node dist/service/src/cli/healthcheck.js [service|portal]`: a container's health check (Docker's
// HEALTHCHECK, compose's healthcheck) where no gRPC client and no shell exist. Exits 0 when healthy,
// 1 when not, printing one line either way. Reads the same settings as the process it checks.
//   service: grpc.health.v1 Check for the "readiness" service name over the Connect port (Connect's
//            JSON protocol on HTTP/2, TLS when TLS_CERT_FILE is set), on this machine's loopback.
//   portal:  GET /healthz on PORTAL_PORT.
// Sends no token and no secret. Over TLS it does not verify the certificate: it talks to its own
// container on 127.0.0.1, which the certificate need not name. It cannot pass mutual TLS
// (TLS_CLIENT_CA_FILE): check such a service from outside, with a client certificate.
import http from "node:http";
import http2 from "node:http2";
import { portFrom } from "../runtime/config.js";

const TIMEOUT_MS = 4_000;

function checkService(env: NodeJS.ProcessEnv): Promise<string> {
  const tls = Boolean(env.TLS_CERT_FILE);
  const port = portFrom(env, "CONNECT_PORT", 50052);
  return new Promise((resolve, reject) => {
    const session = http2.connect(`${tls ? "https" : "http"}://127.0.0.1:${port}`, tls ? { rejectUnauthorized: false } : {});
    session.setTimeout(TIMEOUT_MS, () => session.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    session.on("error", reject);
    const request = session.request({
      ":method": "POST",
      ":path": "/grpc.health.v1.Health/Check",
      "content-type": "application/json",
      "connect-protocol-version": "1",
    });
    let status = 0;
    let body = "";
    request.on("response", (headers) => (status = Number(headers[":status"])));
    request.setEncoding("utf8");
    request.on("data", (chunk: string) => (body += chunk));
    request.on("error", reject);
    request.on("end", () => {
      session.close();
      let answer: { status?: string } = {};
      try {
        answer = JSON.parse(body) as { status?: string };
      } catch {
        // reported below
      }
      if (status === 200 && answer.status === "SERVING") resolve(`service SERVING (readiness, port ${port})`);
      else reject(new Error(`service not ready: HTTP ${status}, ${answer.status ?? body.slice(0, 200)}`));
    });
    request.end(JSON.stringify({ service: "readiness" }));
  });
}

function checkPortal(env: NodeJS.ProcessEnv): Promise<string> {
  const port = portFrom(env, "PORTAL_PORT", 3000);
  return new Promise((resolve, reject) => {
    const request = http.get({ host: "127.0.0.1", port, path: "/healthz", timeout: TIMEOUT_MS }, (res) => {
      res.resume();
      if (res.statusCode === 200) resolve(`portal healthy (port ${port})`);
      else reject(new Error(`portal not healthy: HTTP ${res.statusCode}`));
    });
    request.on("timeout", () => request.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)));
    request.on("error", reject);
  });
}

const what = process.argv[2] ?? "service";
if (what !== "service" && what !== "portal") {
  console.error("Usage: node dist/service/src/cli/healthcheck.js [service|portal]");
  process.exit(2);
}
(what === "service" ? checkService(process.env) : checkPortal(process.env)).then(
  (message) => {
    console.log(message);
    process.exit(0);
  },
  (error: unknown) => {
    console.error(`unhealthy: ${error instanceof Error ? error.message : String(error)}`);
    process.exit(1);
  },
);
