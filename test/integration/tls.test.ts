// TLS and mutual TLS on both ports, with certificates made here by openssl.
import { makeTestCertificates } from "../support/certificates.js";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import http from "node:http";
import https from "node:https";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Writable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { createLogger } from "../../service/src/logger.js";
import { generateMasterKey } from "../../service/src/keyring/keyring.js";
import { generateToken } from "../../service/src/auth/tokens.js";
import { startService, type RunningService } from "../../service/src/server.js";
import { tlsFromEnv } from "../../service/src/runtime/tls.js";
import { ConfigError } from "../../service/src/runtime/config.js";
import { OrganizationService } from "@provider-credentials/wire/gen/credentials_pb";
import { createTestDatabase, type TestDatabase } from "../support/harness.js";

const dir = mkdtempSync(path.join(tmpdir(), "pc-tls-"));
const file = (name: string) => path.join(dir, name);

/** A CA, a server certificate for 127.0.0.1/localhost and a client certificate, all signed by the CA. */
function makeCertificates(): void {
  makeTestCertificates(dir);
}

let db: TestDatabase;
const adminToken = generateToken();
const masterKey = generateMasterKey();

async function start(env: NodeJS.ProcessEnv): Promise<RunningService> {
  return startService({
    databaseUrl: db.url,
    masterKey,
    serviceAdminToken: adminToken,
    env: {},
    host: "127.0.0.1",
    port: 0,
    connectPort: 0,
    tls: tlsFromEnv(env),
    logger: createLogger("warn", new Writable({ write: (_c, _e, done) => done() })),
    poolSize: 2,
    metricsPort: 0,
  });
}

/** GET /metrics with the admin token over `https` (trusting `ca`) or `http`: the status, or the error's code. */
function scrapeMetrics(protocol: "https" | "http", port: number, ca?: Buffer): Promise<number | string> {
  const client = protocol === "https" ? https : http;
  return new Promise((resolve) => {
    const req = client.get({ host: "127.0.0.1", port, path: "/metrics", ca, headers: { authorization: `Bearer ${adminToken}` } }, (res) => {
      res.resume();
      res.on("end", () => resolve(res.statusCode ?? 0));
    });
    req.on("error", (error: NodeJS.ErrnoException) => resolve(error.code ?? error.message));
  });
}

/** One call over a grpc-js client with the admin token: "ok", or "error <code>: <details>". */
function callOverGrpcJs(
  port: number,
  credentials: grpc.ChannelCredentials,
  service: "OrganizationService" | "CredentialService",
  method: string,
  request: object,
): Promise<string> {
  const def = protoLoader.loadSync("proto/credentials.proto", { enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { credentials: { v1: Record<typeof service, grpc.ServiceClientConstructor> } };
  const client = new pkg.credentials.v1[service](`127.0.0.1:${port}`, credentials) as grpc.Client & Record<string, (...args: unknown[]) => unknown>;
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${adminToken}`);
  return new Promise((resolve) => {
    client[method](request, metadata, { deadline: Date.now() + 5_000 }, (error: grpc.ServiceError | null) => {
      client.close();
      resolve(error ? `error ${error.code}: ${error.details}` : "ok");
    });
  });
}

const listOverGrpcJs = (port: number, credentials: grpc.ChannelCredentials) =>
  callOverGrpcJs(port, credentials, "OrganizationService", "ListOrganizations", {});
/** ResolveKey for an organisation that does not exist: NOT_FOUND naming it. */
const resolveOverGrpcJs = (port: number, credentials: grpc.ChannelCredentials) =>
  callOverGrpcJs(port, credentials, "CredentialService", "ResolveKey", { organizationId: "org-over-tls", provider: "PROVIDER_OPENAI" });

beforeAll(async () => {
  makeCertificates();
  db = await createTestDatabase();
});
afterAll(async () => {
  await db?.drop();
  rmSync(dir, { recursive: true, force: true });
});

describe("TLS", () => {
  it("serves gRPC and Connect over TLS, HTTP/1.1 included, and refuses cleartext", async () => {
    const service = await start({ TLS_CERT_FILE: file("server.pem"), TLS_KEY_FILE: file("server.key") });
    try {
      const ca = readFileSync(file("ca.pem"));
      expect(await listOverGrpcJs(service.port, grpc.credentials.createSsl(ca))).toBe("ok");
      expect(await listOverGrpcJs(service.port, grpc.credentials.createInsecure())).toMatch(/^error 14: /);
      expect(await resolveOverGrpcJs(service.port, grpc.credentials.createSsl(ca))).toBe('error 5: organization "org-over-tls" not found');
      expect(await resolveOverGrpcJs(service.port, grpc.credentials.createInsecure())).toMatch(/^error 14: /);

      const auth = (next: Parameters<import("@connectrpc/connect").Interceptor>[0]) => (req: Parameters<typeof next>[0]) => {
        req.header.set("authorization", `Bearer ${adminToken}`);
        return next(req);
      };
      for (const httpVersion of ["1.1", "2"] as const) {
        const transport = createConnectTransport({
          baseUrl: `https://127.0.0.1:${service.connectPort}`,
          httpVersion,
          nodeOptions: { ca },
          interceptors: [auth],
        });
        const res = await createClient(OrganizationService, transport).listOrganizations({});
        expect(res.organizations).toEqual([]);
        // Without a token: refused before the body is read, over HTTP/1.1 as over HTTP/2 (docs/security.md).
        const anonymous = createConnectTransport({ baseUrl: `https://127.0.0.1:${service.connectPort}`, httpVersion, nodeOptions: { ca } });
        await expect(createClient(OrganizationService, anonymous).listOrganizations({})).rejects.toMatchObject({ code: Code.Unauthenticated });
      }
      const grpcOverConnectPort = createGrpcTransport({ baseUrl: `https://127.0.0.1:${service.connectPort}`, nodeOptions: { ca }, interceptors: [auth] });
      expect((await createClient(OrganizationService, grpcOverConnectPort).listOrganizations({})).organizations).toEqual([]);
      // Metrics too: over TLS, and not in cleartext.
      expect(await scrapeMetrics("https", service.metricsPort!, ca)).toBe(200);
      expect(await scrapeMetrics("http", service.metricsPort!)).not.toBe(200);
    } finally {
      await service.close();
    }
  });

  it("with a client CA, requires a client certificate signed by it (mutual TLS)", async () => {
    const service = await start({ TLS_CERT_FILE: file("server.pem"), TLS_KEY_FILE: file("server.key"), TLS_CLIENT_CA_FILE: file("ca.pem") });
    try {
      const ca = readFileSync(file("ca.pem"));
      const withClientCert = grpc.credentials.createSsl(ca, readFileSync(file("client.key")), readFileSync(file("client.pem")));
      expect(await listOverGrpcJs(service.port, withClientCert)).toBe("ok");
      expect(await listOverGrpcJs(service.port, grpc.credentials.createSsl(ca))).toMatch(/^error 14: /);
      expect(await resolveOverGrpcJs(service.port, withClientCert)).toBe('error 5: organization "org-over-tls" not found');
      expect(await resolveOverGrpcJs(service.port, grpc.credentials.createSsl(ca))).toMatch(/^error 14: /);
      const connect = (options: { cert?: Buffer; key?: Buffer }) =>
        createClient(
          OrganizationService,
          createConnectTransport({
            baseUrl: `https://127.0.0.1:${service.connectPort}`,
            httpVersion: "1.1",
            nodeOptions: { ca, ...options },
            interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${adminToken}`), next(req))],
          }),
        ).listOrganizations({});
      await expect(connect({ cert: readFileSync(file("client.pem")), key: readFileSync(file("client.key")) })).resolves.toBeDefined();
      await expect(connect({})).rejects.toThrow();
      // Metrics need the client certificate too.
      expect(await scrapeMetrics("https", service.metricsPort!, ca)).not.toBe(200);
    } finally {
      await service.close();
    }
  });

  it("refuses half a configuration with a clear message", () => {
    expect(() => tlsFromEnv({ TLS_CERT_FILE: file("server.pem") })).toThrow(new ConfigError("set both TLS_CERT_FILE and TLS_KEY_FILE to serve TLS"));
    expect(() => tlsFromEnv({ TLS_CLIENT_CA_FILE: file("ca.pem") })).toThrow("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE");
    expect(() => tlsFromEnv({ TLS_CERT_FILE: file("missing.pem"), TLS_KEY_FILE: file("server.key") })).toThrow(/^TLS_CERT_FILE=.*missing\.pem cannot be used/);
    expect(() => tlsFromEnv({ TLS_CERT_FILE: file("server.ext"), TLS_KEY_FILE: file("server.key") })).toThrow("not a PEM file");
  });
});

describe("the portal in front of a mutual-TLS service", () => {
  it("presents its client certificate (CREDENTIALS_SERVICE_*_FILE) and works; without one it answers 503", async () => {
    const { startTestPortal } = await import("../support/portal-harness.js");
    const tls = tlsFromEnv({ TLS_CERT_FILE: file("server.pem"), TLS_KEY_FILE: file("server.key"), TLS_CLIENT_CA_FILE: file("ca.pem") });
    const trusted = await startTestPortal({
      tls,
      portalEnv: {
        CREDENTIALS_SERVICE_CA_FILE: file("ca.pem"),
        CREDENTIALS_SERVICE_CERT_FILE: file("client.pem"),
        CREDENTIALS_SERVICE_KEY_FILE: file("client.key"),
      },
    });
    try {
      const created = await trusted.request("POST", "/api/organizations", { body: { organization_id: "tls-org", name: "TLS" } });
      expect(created.status).toBe(201);
    } finally {
      await trusted.close();
    }
    const anonymous = await startTestPortal({ tls, portalEnv: { CREDENTIALS_SERVICE_CA_FILE: file("ca.pem") } });
    try {
      const refused = await anonymous.request("GET", "/api/organizations");
      expect(refused.status).toBe(503);
      expect(refused.json).toEqual({ code: "service_unavailable", message: expect.stringContaining("unavailable") });
    } finally {
      await anonymous.close();
    }
  });
});
