import { create, toBinary, type DescFile, type MessageInitShape, type Registry } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import {
  ServerReflection,
  type ServerReflectionRequest,
  ServerReflectionResponseSchema,
} from "@provider-credentials/wire/gen/grpc/reflection/v1/reflection_pb";

export { ServerReflection };

type Answer = MessageInitShape<typeof ServerReflectionResponseSchema>["messageResponse"];

/**
 * grpc.reflection.v1, so that grpcurl and `buf curl` can call the service
 * without a local copy of the protos. Its error texts are @grpc/reflection's,
 * which answers on the grpc-js port.
 */
export function createReflectionService(registry: Registry, serviceNames: readonly string[]): ServiceImpl<typeof ServerReflection> {
  const files = new Map<string, DescFile>();
  for (const desc of registry) {
    for (const file of [desc.file, ...desc.file.dependencies]) files.set(file.name, file);
  }

  const answer = (req: ServerReflectionRequest): Answer => {
    const request = req.messageRequest;
    switch (request.case) {
      case "listServices":
        return { case: "listServicesResponse", value: { service: serviceNames.map((name) => ({ name })) } };
      case "fileByFilename": {
        const file = [...files.values()].find((f) => `${f.name}.proto` === request.value);
        return file ? fileResponse(file) : notFound(`Proto file not found: ${request.value}`);
      }
      case "fileContainingSymbol": {
        const file = fileOfSymbol(registry, request.value);
        return file ? fileResponse(file) : notFound(`Symbol not found: ${request.value}`);
      }
      case "allExtensionNumbersOfType":
        return { case: "allExtensionNumbersResponse", value: { baseTypeName: request.value, extensionNumber: [] } };
      case "fileContainingExtension":
        return notFound(`Extension not found for symbol ${request.value.containingType} at field ${request.value.extensionNumber}`);
      default:
        return { case: "errorResponse", value: { errorCode: Code.InvalidArgument, errorMessage: "empty reflection request" } };
    }
  };

  return {
    async *serverReflectionInfo(requests) {
      for await (const req of requests) {
        yield create(ServerReflectionResponseSchema, {
          validHost: req.host,
          originalRequest: req,
          messageResponse: answer(req),
        });
      }
    },
  };
}

function fileOfSymbol(registry: Registry, symbol: string): DescFile | undefined {
  const desc = registry.get(symbol);
  if (desc) return desc.file;
  // A method or field: look its parent up.
  const parent = symbol.slice(0, symbol.lastIndexOf("."));
  return parent ? registry.get(parent)?.file : undefined;
}

/** A file and then everything it imports (the order grpc-go uses), as serialized FileDescriptorProtos. */
function fileResponse(file: DescFile): Answer {
  const ordered: DescFile[] = [];
  const visit = (f: DescFile) => {
    if (ordered.includes(f)) return;
    f.dependencies.forEach(visit);
    ordered.push(f);
  };
  visit(file);
  return {
    case: "fileDescriptorResponse",
    value: { fileDescriptorProto: ordered.reverse().map((f) => toBinary(FileDescriptorProtoSchema, f.proto)) },
  };
}

function notFound(message: string): Answer {
  return { case: "errorResponse", value: { errorCode: Code.NotFound, errorMessage: message } };
}
