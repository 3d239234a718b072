// Plain @grpc/grpc-js clients built from proto/*.proto with @grpc/proto-loader,
// as an internal caller in any language would build them: no generated code.
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";

export const PROTO_DIR = fileURLToPath(new URL("../proto/", import.meta.url));
const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [PROTO_DIR] };

export type Callback = (error: grpc.ServiceError | null, response?: Record<string, unknown>) => void;
export type UnaryMethod = (request: object, metadata: grpc.Metadata, options: grpc.CallOptions, callback: Callback) => grpc.ClientUnaryCall;
export type ServiceClient = grpc.Client & Record<string, UnaryMethod>;
type ClientConstructor = new (address: string, credentials: grpc.ChannelCredentials, options?: grpc.ChannelOptions) => ServiceClient;

function lookup(file: string, path: string): ClientConstructor {
  let node: unknown = grpc.loadPackageDefinition(protoLoader.loadSync(`${PROTO_DIR}${file}`, LOADER_OPTIONS));
  for (const part of path.split(".")) node = (node as Record<string, unknown>)[part];
  if (typeof node !== "function") throw new Error(`${path} is not a service in ${file}`);
  return node as ClientConstructor;
}

let credentialCtor: ClientConstructor | undefined;
let healthCtor: ClientConstructor | undefined;

/** `ownConnection`: a channel with its own subchannel pool, i.e. its own HTTP/2 connection. */
export function healthClient(address: string, ownConnection = false): ServiceClient {
  healthCtor ??= lookup("grpc/health/v1/health.proto", "grpc.health.v1.Health");
  return new healthCtor(address, grpc.credentials.createInsecure(), ownConnection ? { "grpc.use_local_subchannel_pool": 1 } : {});
}

export function credentialClient(address: string, ownConnection = false): ServiceClient {
  credentialCtor ??= lookup("credentials.proto", "credentials.v1.CredentialService");
  return new credentialCtor(address, grpc.credentials.createInsecure(), ownConnection ? { "grpc.use_local_subchannel_pool": 1 } : {});
}

export function bearer(token: string | undefined): grpc.Metadata {
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", `Bearer ${token}`);
  return metadata;
}

/** One unary call as a promise; rejects with the grpc-js ServiceError. */
export function call<T = Record<string, unknown>>(
  client: ServiceClient,
  method: string,
  request: object,
  metadata: grpc.Metadata = new grpc.Metadata(),
  timeoutMs = 10_000,
): Promise<T> {
  return new Promise((resolve, reject) => {
    client[method](request, metadata, { deadline: Date.now() + timeoutMs }, (error, response) => (error ? reject(error) : resolve(response as T)));
  });
}

/** Name of a gRPC status code ("NOT_FOUND"), for error tallies. */
export function codeName(code: number | undefined): string {
  if (code === undefined) return "UNKNOWN";
  return grpc.status[code] ?? String(code);
}
