// The floor: a bare @grpc/grpc-js server that answers grpc.health.v1.Health/Check
// (SERVING) and nothing else. What any RPC on Node's own gRPC stack costs at least.
//
//   node --import tsx bench/bare-server.ts PORT     prints "bare grpc-js server listening on 127.0.0.1:PORT"
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { PROTO_DIR } from "./clients.js";

const port = Number(process.argv[2] ?? 0);
const definition = protoLoader.loadSync(`${PROTO_DIR}grpc/health/v1/health.proto`, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
  includeDirs: [PROTO_DIR],
});
const health = (grpc.loadPackageDefinition(definition).grpc as grpc.GrpcObject).health as grpc.GrpcObject;
const service = ((health.v1 as grpc.GrpcObject).Health as grpc.ServiceClientConstructor).service;

const server = new grpc.Server();
const SERVING = { status: "SERVING" };
server.addService(service, {
  Check: (_call: grpc.ServerUnaryCall<unknown, unknown>, callback: grpc.sendUnaryData<unknown>) => callback(null, SERVING),
  Watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
    call.write(SERVING);
  },
});

server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
  if (error) {
    console.error(`bare grpc-js server: ${error.message}`);
    process.exit(1);
  }
  console.log(`bare grpc-js server listening on 127.0.0.1:${bound}`);
});

const stop = () => server.tryShutdown(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
