// grpc.health.v1 and grpc.reflection on the grpc-js port, from the kept packages
// (grpc-health-check, @grpc/reflection), driven by what drives the Connect
// port's: the same HealthState, the same file descriptors, the same token rule.
import * as grpc from "@grpc/grpc-js";
import type { MessageTypeDefinition, PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { toBinary, type DescFile, type DescMessage } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { HealthImplementation, type ServingStatus } from "grpc-health-check";
import { HealthCheckResponse_ServingStatus as Status } from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { AUTHORIZATION_HEADER } from "@provider-credentials/wire/auth";
import type { HealthState } from "./health.js";
import { binaryDeserializer, binarySerializer } from "./flat-codec.js";

type Handlers = grpc.UntypedServiceImplementation;

/**
 * Health on grpc-js, following `state`: Check and Watch for "" and each service the state knows.
 * At shutdown every Watch stream hears NOT_SERVING and then ends (status OK), as on the Connect
 * port, so that watchers do not hold the drain.
 */
export function addGrpcJsHealth(server: grpc.Server, state: HealthState): void {
  const names = ["", ...state.services];
  const statusOf = (name: string): ServingStatus => (state.status(name) === Status.SERVING ? "SERVING" : "NOT_SERVING");
  const current = new Map(names.map((name) => [name, statusOf(name)]));
  const health = new HealthImplementation(Object.fromEntries(current));
  const watches = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  state.subscribe(() => {
    for (const name of names) {
      const status = statusOf(name);
      if (current.get(name) === status) continue;
      current.set(name, status);
      health.setStatus(name, status);
    }
    // The status was written to every watcher above (grpc-health-check writes synchronously).
    if (state.isShutDown) for (const call of watches) call.end();
  });
  health.addToServer({
    addService(service, implementation) {
      const watch = implementation.watch as grpc.handleServerStreamingCall<unknown, unknown>;
      const tracked: Handlers = {
        ...implementation,
        watch: (call: grpc.ServerWritableStream<unknown, unknown>) => {
          const release = state.admitWatcher();
          if (release instanceof ConnectError) {
            call.emit("error", { code: grpc.status.RESOURCE_EXHAUSTED, details: release.rawMessage, metadata: new grpc.Metadata() });
            return;
          }
          watches.add(call);
          const ended = () => {
            watches.delete(call);
            release();
          };
          call.once("cancelled", ended);
          call.once("finish", ended);
          call.once("close", ended);
          watch(call);
          if (state.isShutDown) call.end();
        },
      };
      server.addService(service as grpc.ServiceDefinition, tracked);
    },
  });
}

/** The bearer check of the Connect port's auth interceptor, for a method: resolves, or rejects with the ConnectError it would raise. */
export type TokenCheck = (authorization: string | null, method: string) => Promise<void>;

/**
 * Reflection (v1 and v1alpha) on grpc-js for `files` and what they import, listing `services`.
 * Every stream is checked with `check` before its first request is read: deny by default.
 */
export function addGrpcJsReflection(server: grpc.Server, files: readonly DescFile[], services: readonly string[], check: TokenCheck): void {
  const all = new Map<string, DescFile>();
  const visit = (file: DescFile) => {
    if (all.has(file.name)) return;
    file.dependencies.forEach(visit);
    all.set(file.name, file);
  };
  files.forEach(visit);
  // A package definition whose entries carry our files as they are. (proto-loader's own loaders
  // regenerate files through protobufjs, which merges files of one package: admin.proto and
  // credentials.proto would come back as one file, and buf curl could not find the services.)
  const fileDescriptorProtos = [...all.values()].map((f) => Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)));
  const definition: PackageDefinition = {};
  for (const file of all.values()) {
    for (const message of nestedMessages(file.messages)) {
      definition[message.typeName] = {
        format: "Protocol Buffer 3 DescriptorProto",
        type: message.proto,
        fileDescriptorProtos,
        serialize: binarySerializer(message),
        deserialize: binaryDeserializer(message),
      } satisfies MessageTypeDefinition<object, object>;
    }
  }
  const reflection = new ReflectionService(definition, { services: [...services] });
  reflection.addToServer({
    addService(service, implementation) {
      const guarded: Handlers = {};
      for (const [name, handler] of Object.entries(implementation)) {
        const path = service[name]?.path ?? name;
        guarded[name] = (call: grpc.ServerDuplexStream<unknown, unknown>) => {
          const authorization = call.metadata.get(AUTHORIZATION_HEADER).map(String).join(", ") || null;
          // Requests that arrive meanwhile wait in the stream until the handler reads them.
          check(authorization, path.slice(path.lastIndexOf("/") + 1)).then(
            () => (handler as grpc.handleBidiStreamingCall<unknown, unknown>)(call),
            (error: unknown) => {
              const e = error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal);
              call.emit("error", { code: e.code as number as grpc.status, details: e.rawMessage, metadata: new grpc.Metadata() });
            },
          );
        };
      }
      server.addService(service, guarded);
    },
  });
}

function* nestedMessages(messages: readonly DescMessage[]): Generator<DescMessage> {
  for (const message of messages) {
    yield message;
    yield* nestedMessages(message.nestedMessages);
  }
}
