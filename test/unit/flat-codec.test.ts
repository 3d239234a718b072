// The flat codec (service/src/rpc/flat-codec.ts) against @bufbuild/protobuf:
// the same bytes out, the same messages in, the same errors, for every flat
// message of our protos, with values chosen to hit every edge (zero values,
// optional fields set to zero, oneofs, varint boundaries, negative enums,
// non-ASCII and lone surrogates, unknown fields, truncation, random bytes).
import fc from "fast-check";
import { create, fromBinary, toBinary, type DescMessage, type Message } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { flatCodec, binaryDeserializer, binarySerializer } from "../../service/src/rpc/flat-codec.js";
import {
  file_credentials,
  ResolveKeyRequestSchema,
  ResolveKeyResponseSchema,
  Provider,
  KeySource,
  ListCredentialsResponseSchema,
} from "@provider-credentials/wire/gen/credentials_pb";
import { file_admin } from "@provider-credentials/wire/gen/admin_pb";
import {
  file_grpc_health_v1_health,
  HealthCheckRequestSchema,
  HealthCheckResponseSchema,
  HealthCheckResponse_ServingStatus,
} from "@provider-credentials/wire/gen/grpc/health/v1/health_pb";
import { file_grpc_reflection_v1_reflection } from "@provider-credentials/wire/gen/grpc/reflection/v1/reflection_pb";

function allMessages(): DescMessage[] {
  const out: DescMessage[] = [];
  const visit = (m: DescMessage) => {
    out.push(m);
    m.nestedMessages.forEach(visit);
  };
  for (const file of [file_credentials, file_admin, file_grpc_health_v1_health, file_grpc_reflection_v1_reflection]) file.messages.forEach(visit);
  return out;
}

const flat = allMessages().filter((m) => flatCodec(m) !== undefined);
const notFlat = allMessages().filter((m) => flatCodec(m) === undefined);

const text = fc.oneof(
  fc.constant(""),
  fc.string({ maxLength: 80 }),
  fc.string({ unit: "binary", maxLength: 40 }),
  fc.constantFrom("\ud800", "a\udc00b", "é", "x".repeat(127), "y".repeat(128), "z".repeat(300)),
);
const int32 = fc.oneof(
  fc.integer({ min: 0, max: 5 }),
  fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }),
  fc.constantFrom(0, 127, 128, 16383, 16384, 2 ** 28 - 1, 2 ** 28, 2 ** 31 - 1, -1),
);
const uint32 = fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 2 ** 32 - 1 }), fc.constantFrom(2 ** 28 - 1, 2 ** 28, 2 ** 32 - 1));

/** An init object for a flat message: every field maybe set, oneofs maybe chosen. */
function initOf(desc: DescMessage): fc.Arbitrary<Record<string, unknown>> {
  const parts: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of desc.fields) {
    if (field.oneof) continue;
    const value = valueOf(field);
    parts[field.localName] = field.presence === 2 ? value : fc.option(value, { nil: undefined });
  }
  for (const oneof of desc.oneofs) {
    parts[oneof.localName] = fc.oneof(
      fc.constant({ case: undefined }),
      ...oneof.fields.map((field) => valueOf(field).map((value) => ({ case: field.localName, value }))),
    );
  }
  return fc.record(parts, { requiredKeys: [] }).map((init) => Object.fromEntries(Object.entries(init).filter(([, v]) => v !== undefined)));
}

function valueOf(field: DescMessage["fields"][number]): fc.Arbitrary<unknown> {
  if (field.fieldKind === "enum") return fc.oneof(fc.constantFrom(...field.enum.values.map((v) => v.number)), int32);
  if (field.fieldKind !== "scalar") throw new Error(`${field.toString()} is not flat`);
  switch (field.scalar) {
    case 9 /* STRING */:
      return text;
    case 8 /* BOOL */:
      return fc.boolean();
    case 5 /* INT32 */:
      return int32;
    case 13 /* UINT32 */:
      return uint32;
    default:
      throw new Error(`${field.toString()}: unexpected scalar`);
  }
}

const messageOf = (desc: DescMessage) => initOf(desc).map((init) => create(desc, init as never) as Message);

/** fromBinary's outcome and the codec's: the same message, or both an error. */
function sameDecoding(desc: DescMessage, bytes: Uint8Array): void {
  let expected: Message | Error;
  try {
    expected = fromBinary(desc, bytes);
  } catch (error) {
    expected = error as Error;
  }
  let actual: Message | Error;
  try {
    actual = flatCodec(desc)!.decode(bytes);
  } catch (error) {
    actual = error as Error;
  }
  if (expected instanceof Error) {
    expect(actual).toBeInstanceOf(Error);
    expect((actual as Error).message).toBe(expected.message);
  } else {
    expect(actual).toStrictEqual(expected);
  }
}

describe("flat codec", () => {
  it("covers the hot path's messages and only flat ones", () => {
    for (const desc of [ResolveKeyRequestSchema, ResolveKeyResponseSchema, HealthCheckRequestSchema, HealthCheckResponseSchema]) {
      expect(flat).toContain(desc);
    }
    expect(notFlat).toContain(ListCredentialsResponseSchema);
    for (const desc of notFlat) {
      expect(
        desc.fields.some(
          (f) =>
            f.fieldKind === "message" || f.fieldKind === "list" || f.fieldKind === "map" || (f.fieldKind === "scalar" && ![9, 8, 5, 13].includes(f.scalar)),
        ),
      ).toBe(true);
    }
    expect(flat.length).toBeGreaterThan(10);
    // Made once per message: a service definition asks for each method and direction.
    expect(flatCodec(ResolveKeyRequestSchema)).toBe(flatCodec(ResolveKeyRequestSchema));
  });

  it("writes exactly toBinary's bytes for every flat message", () => {
    for (const desc of flat) {
      const codec = flatCodec(desc)!;
      fc.assert(
        fc.property(messageOf(desc), (message) => {
          expect(codec.encode(message).equals(Buffer.from(toBinary(desc, message)))).toBe(true);
        }),
        { numRuns: 150 },
      );
    }
  });

  it("reads every flat message back exactly as fromBinary does", () => {
    for (const desc of flat) {
      fc.assert(
        fc.property(messageOf(desc), (message) => sameDecoding(desc, toBinary(desc, message))),
        { numRuns: 150 },
      );
    }
  });

  it("agrees with fromBinary on damaged and random bytes: the same message or the same error", () => {
    for (const desc of flat) {
      fc.assert(
        fc.property(messageOf(desc), fc.nat(), fc.integer({ min: 0, max: 255 }), fc.uint8Array({ maxLength: 12 }), (message, at, byte, tail) => {
          const bytes = toBinary(desc, message);
          const changed = Uint8Array.from(bytes);
          if (changed.length > 0) changed[at % changed.length] = byte;
          sameDecoding(desc, changed);
          sameDecoding(desc, bytes.subarray(0, bytes.length > 0 ? at % bytes.length : 0));
          sameDecoding(desc, Buffer.concat([bytes, tail]));
        }),
        { numRuns: 100 },
      );
      fc.assert(
        fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => sameDecoding(desc, bytes)),
        { numRuns: 100 },
      );
    }
  });

  it("handles the hot path's usual messages itself, and hands the rest to @bufbuild/protobuf", () => {
    const request = flatCodec(ResolveKeyRequestSchema)!;
    const bytes = toBinary(
      ResolveKeyRequestSchema,
      create(ResolveKeyRequestSchema, { scope: { case: "teamId", value: "team-42" }, provider: Provider.ANTHROPIC }),
    );
    expect(request.tryDecode(bytes)).toStrictEqual(fromBinary(ResolveKeyRequestSchema, bytes));
    const response = flatCodec(ResolveKeyResponseSchema)!;
    const answer = create(ResolveKeyResponseSchema, {
      apiKey: "sk-ant-abc",
      source: KeySource.ORGANIZATION,
      credentialId: "c-1",
      organizationId: "org-1",
      failing: false,
    });
    expect(response.tryEncode(answer)?.equals(toBinary(ResolveKeyResponseSchema, answer))).toBe(true);
    const health = flatCodec(HealthCheckResponseSchema)!;
    const serving = create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus.SERVING });
    expect(health.tryEncode(serving)?.equals(toBinary(HealthCheckResponseSchema, serving))).toBe(true);

    // Not ASCII, an unknown field, a negative enum: fromBinary / toBinary's job, with their results.
    const unicode = toBinary(ResolveKeyRequestSchema, create(ResolveKeyRequestSchema, { scope: { case: "organizationId", value: "orgé" } }));
    expect(request.tryDecode(unicode)).toBeUndefined();
    expect(request.decode(unicode)).toStrictEqual(fromBinary(ResolveKeyRequestSchema, unicode));
    const withUnknown = Buffer.concat([bytes, Buffer.from([0xa0, 0x06, 0x07])]); // field 100, varint 7
    expect(request.tryDecode(withUnknown)).toBeUndefined();
    const decoded = request.decode(withUnknown);
    expect(decoded.$unknown).toHaveLength(1);
    expect(Buffer.from(request.encode(decoded)).equals(withUnknown)).toBe(true);
    const negative = create(ResolveKeyRequestSchema, { provider: -1 as Provider });
    expect(request.tryEncode(negative)).toBeUndefined();
    expect(request.encode(negative).equals(toBinary(ResolveKeyRequestSchema, negative))).toBe(true);
  });

  it("serializers take init objects as toBinary(create()) does, for flat and other messages", () => {
    const init = { apiKey: "sk-x", organizationId: "org-1", source: KeySource.ENVIRONMENT };
    expect(binarySerializer(ResolveKeyResponseSchema)(init).equals(toBinary(ResolveKeyResponseSchema, create(ResolveKeyResponseSchema, init)))).toBe(true);
    const list = { credentials: [{ id: "c-1", credentialName: "main" }], nextPageToken: "p2" };
    const bytes = binarySerializer(ListCredentialsResponseSchema)(list);
    expect(bytes.equals(toBinary(ListCredentialsResponseSchema, create(ListCredentialsResponseSchema, list as never)))).toBe(true);
    expect(binaryDeserializer(ListCredentialsResponseSchema)(bytes)).toStrictEqual(fromBinary(ListCredentialsResponseSchema, bytes));
  });
});
