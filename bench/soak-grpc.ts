// @grpc/grpc-js clients of one replica for the soak (built from proto/*.proto
// like bench/clients.ts does), and the reduction of a ResolveKey answer to the
// model's Outcome.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { codeName, credentialClient, PROTO_DIR, type ServiceClient } from "./clients.js";
import type { Outcome } from "./soak-model.js";

const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };

type ClientConstructor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => ServiceClient;
const constructors = new Map<string, ClientConstructor>();

function ctor(file: string, path: string): ClientConstructor {
  const key = `${file}|${path}`;
  let found = constructors.get(key);
  if (!found) {
    let node: unknown = grpc.loadPackageDefinition(protoLoader.loadSync(`${PROTO_DIR}${file}`, LOADER_OPTIONS));
    for (const part of path.split(".")) node = (node as Record<string, unknown>)[part];
    if (typeof node !== "function") throw new Error(`${path} is not a service in ${file}`);
    found = node as ClientConstructor;
    constructors.set(key, found);
  }
  return found;
}

export interface ReplicaClients {
  /** ResolveKey load: its own HTTP/2 connection. */
  resolve: ServiceClient;
  /** Administrator calls and checks: another connection, so that they do not queue behind the load. */
  credentials: ServiceClient;
  organizations: ServiceClient;
  admin: ServiceClient;
  close(): void;
}

export function replicaClients(target: string): ReplicaClients {
  const own = { "grpc.use_local_subchannel_pool": 1 };
  const resolve = credentialClient(target, true);
  const credentials = credentialClient(target, true);
  const organizations = new (ctor("credentials.proto", "credentials.v1.OrganizationService"))(target, grpc.credentials.createInsecure(), own);
  const admin = new (ctor("admin.proto", "credentials.v1.AdminService"))(target, grpc.credentials.createInsecure(), own);
  return {
    resolve,
    credentials,
    organizations,
    admin,
    close() {
      for (const c of [resolve, credentials, organizations, admin]) c.close();
    },
  };
}

export interface ResolveResponse {
  api_key?: string;
  api_base?: string;
  source?: string;
  credential_id?: string;
  organization_id?: string;
}

/** A ResolveKey answer (or error) as the model sees it. */
export function toOutcome(error: grpc.ServiceError | null, response: ResolveResponse | undefined): Outcome {
  if (error) {
    const code = codeName(error.code);
    if (code === "FAILED_PRECONDITION") return { kind: "failed_precondition" };
    if (code === "NOT_FOUND") return { kind: "not_found" };
    return { kind: "error", code, message: error.details ?? "" };
  }
  const key = response?.api_key ?? "";
  const organizationId = response?.organization_id ?? "";
  if (key === "") return { kind: "error", code: "BAD_RESPONSE", message: "a success without an api_key" };
  if (response?.source === "KEY_SOURCE_ORGANIZATION") {
    if (!response.credential_id) return { kind: "error", code: "BAD_RESPONSE", message: "source ORGANIZATION without a credential_id" };
    return { kind: "organization", credentialId: response.credential_id, key, apiBase: response.api_base || null, organizationId };
  }
  if (response?.source === "KEY_SOURCE_ENVIRONMENT") {
    if (response.credential_id || response.api_base)
      return { kind: "error", code: "BAD_RESPONSE", message: "source ENVIRONMENT with a credential_id or api_base" };
    return { kind: "environment", key, organizationId };
  }
  return { kind: "error", code: "BAD_RESPONSE", message: `source ${String(response?.source)}` };
}
