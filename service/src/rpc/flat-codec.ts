// Binary protobuf for "flat" messages: every field a singular string, bool,
// int32, uint32 or open enum (proto3 implicit presence, `optional` or in a
// oneof). ResolveKey's request and response and the health check are such
// messages, and they are encoded and decoded on every hot-path call.
//
// @bufbuild/protobuf's toBinary and fromBinary are general and reflective: a
// reflection wrapper, Maps, a chunk list and a TextEncoder array per message
// (its cost: ADR 0004, docs/performance.md). These codecs write and read the same
// bytes directly, and hand anything outside their narrow case to
// @bufbuild/protobuf itself, so that they never disagree with it:
// - encode: a message with unknown fields, or a value of an unexpected type
//   or range (which toBinary refuses with its own error);
// - decode: a field number the message does not have (unknown fields are
//   kept), a wire type that does not match the field, a varint longer than 4
//   bytes (negative or >= 2^28 values), a string that is not ASCII (UTF-8
//   validation), or anything truncated (fromBinary's error).
// test/unit/flat-codec.test.ts checks both directions against
// @bufbuild/protobuf byte for byte and field for field.
import { create, fromBinary, isMessage, ScalarType, toBinary, type DescField, type DescMessage, type Message } from "@bufbuild/protobuf";

/** FeatureSet.FieldPresence.IMPLICIT: proto3 fields without `optional`. */
const IMPLICIT = 2;
const VARINT = 0;
const LENGTH_DELIMITED = 2;

interface FlatField {
  readonly number: number;
  readonly localName: string;
  /** The oneof's property when the field is a oneof member. */
  readonly oneof: string | undefined;
  readonly implicit: boolean;
  readonly kind: "string" | "bool" | "int32" | "uint32";
  readonly wireType: typeof VARINT | typeof LENGTH_DELIMITED;
  /** The tag as varint bytes. */
  readonly tag: readonly number[];
  /** The value an implicit-presence field is not written for. */
  readonly zero: string | boolean | number;
}

export interface FlatCodec {
  /** The message's binary form, exactly as toBinary writes it. */
  encode(message: Message): Buffer;
  /** The message, exactly as fromBinary reads it (throws what fromBinary throws). */
  decode(bytes: Uint8Array): Message;
  /** encode() without the hand-over: undefined where toBinary has to write the message. */
  tryEncode(message: Message): Buffer | undefined;
  /** decode() without the hand-over: undefined where fromBinary has to read the bytes. */
  tryDecode(bytes: Uint8Array): Message | undefined;
}

/** Codecs made so far (null: the message is not flat): a service definition asks once per method and direction. */
const codecs = new WeakMap<DescMessage, FlatCodec | null>();

/** A codec for the message when all its fields are flat (see above), else undefined. */
export function flatCodec(desc: DescMessage): FlatCodec | undefined {
  let codec = codecs.get(desc);
  if (codec === undefined) {
    codec = makeFlatCodec(desc) ?? null;
    codecs.set(desc, codec);
  }
  return codec ?? undefined;
}

function makeFlatCodec(desc: DescMessage): FlatCodec | undefined {
  const fields: FlatField[] = [];
  for (const field of [...desc.fields].sort((a, b) => a.number - b.number)) {
    const flat = flatField(field);
    if (flat === undefined) return undefined;
    fields.push(flat);
  }
  const byNumber: Array<FlatField | undefined> = [];
  for (const field of fields) {
    if (field.number > 1000) return undefined; // keep the lookup table small; no such message on the hot path
    byNumber[field.number] = field;
  }
  return {
    encode: (message) => encode(desc, fields, message) ?? slowEncode(desc, message),
    decode: (bytes) => decode(desc, byNumber, bytes) ?? fromBinary(desc, bytes),
    tryEncode: (message) => encode(desc, fields, message),
    tryDecode: (bytes) => decode(desc, byNumber, bytes),
  };
}

function flatField(field: DescField): FlatField | undefined {
  let kind: FlatField["kind"];
  let zero: FlatField["zero"];
  if (field.fieldKind === "enum") {
    if (!field.enum.open) return undefined;
    kind = "int32";
    zero = field.enum.values[0].number;
  } else if (field.fieldKind === "scalar") {
    switch (field.scalar) {
      case ScalarType.STRING:
        [kind, zero] = ["string", ""];
        break;
      case ScalarType.BOOL:
        [kind, zero] = ["bool", false];
        break;
      case ScalarType.INT32:
        [kind, zero] = ["int32", 0];
        break;
      case ScalarType.UINT32:
        [kind, zero] = ["uint32", 0];
        break;
      default:
        return undefined;
    }
  } else {
    return undefined;
  }
  if (field.presence !== IMPLICIT && field.presence !== 1 /* EXPLICIT */) return undefined;
  const wireType = kind === "string" ? LENGTH_DELIMITED : VARINT;
  const tag: number[] = [];
  pushVarint(tag, ((field.number << 3) | wireType) >>> 0);
  return {
    number: field.number,
    localName: field.localName,
    oneof: field.oneof?.localName,
    implicit: field.oneof === undefined && field.presence === IMPLICIT,
    kind,
    wireType,
    tag,
    zero,
  };
}

function pushVarint(bytes: number[], value: number): void {
  while (value > 0x7f) {
    bytes.push((value & 0x7f) | 0x80);
    value >>>= 7;
  }
  bytes.push(value);
}

function slowEncode(desc: DescMessage, message: Message): Buffer {
  const bytes = toBinary(desc, message);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function varintSize(value: number): number {
  return value < 0x80 ? 1 : value < 0x4000 ? 2 : value < 0x200000 ? 3 : value < 0x10000000 ? 4 : 5;
}

/** The field's value when toBinary would write it, undefined when it would not, null when only toBinary can tell. */
function valueToWrite(field: FlatField, message: Record<string, unknown>): unknown {
  let value: unknown;
  if (field.oneof !== undefined) {
    const oneof = message[field.oneof] as { case?: unknown; value?: unknown } | undefined;
    if (oneof === undefined || oneof === null || oneof.case !== field.localName) return undefined;
    value = oneof.value;
  } else if (field.implicit) {
    value = message[field.localName];
  } else {
    if (!Object.prototype.hasOwnProperty.call(message, field.localName)) return undefined;
    value = message[field.localName];
    if (value === undefined) return undefined;
  }
  switch (field.kind) {
    case "string":
      if (typeof value !== "string") return null;
      break;
    case "bool":
      if (typeof value !== "boolean") return null;
      break;
    case "int32":
      if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0x7fffffff) return null; // negative: 10-byte varint, toBinary's job
      break;
    case "uint32":
      if (typeof value !== "number" || !Number.isInteger(value) || value < 0 || value > 0xffffffff) return null;
      break;
  }
  return field.implicit && value === field.zero ? undefined : value;
}

function encode(desc: DescMessage, fields: readonly FlatField[], message: Message): Buffer | undefined {
  const record = message as unknown as Record<string, unknown>;
  const unknown = record.$unknown as unknown[] | undefined;
  if (unknown !== undefined && unknown.length > 0) return undefined;
  // Two passes: sizes first, so that the output is one buffer written once.
  const values: unknown[] = [];
  /** Per field, a string's UTF-8 length (0 for other kinds). */
  const lengths: number[] = [];
  let size = 0;
  for (const field of fields) {
    const value = valueToWrite(field, record);
    if (value === null) return undefined;
    values.push(value);
    const length = field.kind === "string" && value !== undefined ? Buffer.byteLength(value as string, "utf8") : 0;
    lengths.push(length);
    if (value === undefined) continue;
    size += field.tag.length;
    if (field.kind === "string") {
      size += varintSize(length) + length;
    } else {
      size += field.kind === "bool" ? 1 : varintSize(value as number);
    }
  }
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < fields.length; i++) {
    const value = values[i];
    if (value === undefined) continue;
    const field = fields[i];
    for (const byte of field.tag) out[at++] = byte;
    let number: number;
    if (field.kind === "string") {
      const text = value as string;
      const length = lengths[i];
      number = length;
      while (number > 0x7f) {
        out[at++] = (number & 0x7f) | 0x80;
        number >>>= 7;
      }
      out[at++] = number;
      // Lone surrogates become U+FFFD here as in TextEncoder, which toBinary uses.
      at += out.write(text, at, length, "utf8");
      continue;
    }
    number = field.kind === "bool" ? (value ? 1 : 0) : (value as number);
    while (number > 0x7f) {
      out[at++] = (number & 0x7f) | 0x80;
      number >>>= 7;
    }
    out[at++] = number;
  }
  if (at !== size) throw new Error(`flat codec: wrote ${at} of ${size} bytes of ${desc.typeName}`); // cannot happen; never send a wrong message
  return out;
}

/** Where decode reads next (decoding is synchronous, so one cursor serves every call). */
let cursor = 0;

/** The varint at the cursor, advancing it: at most 4 bytes (< 2^28) here; -1 when longer or truncated (fromBinary's job). */
function readSmallVarint(bytes: Buffer, end: number): number {
  let value = 0;
  for (let shift = 0; shift < 28; shift += 7) {
    if (cursor >= end) return -1;
    const byte = bytes[cursor++];
    value |= (byte & 0x7f) << shift;
    if (byte < 0x80) return value;
  }
  return -1;
}

function decode(desc: DescMessage, byNumber: ReadonlyArray<FlatField | undefined>, input: Uint8Array): Message | undefined {
  const bytes = Buffer.isBuffer(input) ? input : Buffer.from(input.buffer, input.byteOffset, input.byteLength);
  const message = create(desc) as unknown as Record<string, unknown>;
  const end = bytes.length;
  cursor = 0;
  while (cursor < end) {
    const tag = readSmallVarint(bytes, end);
    const field = tag < 0 ? undefined : byNumber[tag >>> 3];
    if (field === undefined || (tag & 7) !== field.wireType) return undefined;
    const number = readSmallVarint(bytes, end);
    if (number < 0) return undefined;
    let value: string | boolean | number;
    if (field.kind === "string") {
      const stop = cursor + number;
      if (stop > end) return undefined;
      for (let i = cursor; i < stop; i++) if (bytes[i] >= 0x80) return undefined;
      value = bytes.toString("latin1", cursor, stop);
      cursor = stop;
    } else {
      value = field.kind === "bool" ? number !== 0 : number;
    }
    if (field.oneof !== undefined) message[field.oneof] = { case: field.localName, value };
    else message[field.localName] = value;
  }
  return message as unknown as Message;
}

/** A grpc-js serializer of the message type (full messages or init objects): the flat codec where it applies, else toBinary. */
export function binarySerializer(desc: DescMessage): (message: object) => Buffer {
  const write = flatCodec(desc)?.encode ?? ((message: Message) => slowEncode(desc, message));
  return (message) => write(isMessage(message, desc) ? message : create(desc, message as never));
}

/** A grpc-js deserializer of the message type: the flat codec where it applies, else fromBinary. */
export function binaryDeserializer(desc: DescMessage): (bytes: Uint8Array) => Message {
  return flatCodec(desc)?.decode ?? ((bytes) => fromBinary(desc, bytes));
}
