import { readFileSync } from "node:fs";
import * as grpc from "@grpc/grpc-js";
import { ConfigError } from "./config.js";

/** PEM material for TLS, and whether client certificates are required (mutual TLS). */
export interface TlsConfig {
  cert: Buffer;
  key: Buffer;
  /** When set, clients must present a certificate signed by this CA. */
  clientCa?: Buffer;
}

function readPem(variable: string, file: string): Buffer {
  try {
    const pem = readFileSync(file);
    if (!pem.includes("-----BEGIN")) throw new Error("not a PEM file");
    return pem;
  } catch (error) {
    throw new ConfigError(`${variable}=${file} cannot be used: ${(error as Error).message}`);
  }
}

/** TLS_CERT_FILE and TLS_KEY_FILE (both or neither), and TLS_CLIENT_CA_FILE for mutual TLS. */
export function tlsFromEnv(env: NodeJS.ProcessEnv): TlsConfig | undefined {
  const { TLS_CERT_FILE: certFile, TLS_KEY_FILE: keyFile, TLS_CLIENT_CA_FILE: caFile } = env;
  if (!certFile && !keyFile) {
    if (caFile) throw new ConfigError("TLS_CLIENT_CA_FILE needs TLS_CERT_FILE and TLS_KEY_FILE");
    return undefined;
  }
  if (!certFile || !keyFile) throw new ConfigError("set both TLS_CERT_FILE and TLS_KEY_FILE to serve TLS");
  return {
    cert: readPem("TLS_CERT_FILE", certFile),
    key: readPem("TLS_KEY_FILE", keyFile),
    clientCa: caFile ? readPem("TLS_CLIENT_CA_FILE", caFile) : undefined,
  };
}

/** Node's TLS server options for `tls`: its certificate and key, and with a client CA, client certificates required. */
export function tlsServerOptions(tls: TlsConfig): { cert: Buffer; key: Buffer; ca?: Buffer; requestCert?: boolean; rejectUnauthorized?: boolean } {
  return { cert: tls.cert, key: tls.key, ...(tls.clientCa ? { ca: tls.clientCa, requestCert: true, rejectUnauthorized: true } : {}) };
}

export function grpcServerCredentials(tls: TlsConfig | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(tls.clientCa ?? null, [{ private_key: tls.key, cert_chain: tls.cert }], tls.clientCa !== undefined);
}
