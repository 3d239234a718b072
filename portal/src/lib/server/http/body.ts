import { ApiError } from "../errors.js";

/** Largest request body the API accepts. */
export const MAX_BODY_BYTES = 64 * 1024;

export function tooLarge(): ApiError {
  return new ApiError("payload_too_large", `body: larger than the ${MAX_BODY_BYTES / 1024} KiB limit`);
}

/** 413 when the declared Content-Length is over the limit (checked before anything is read). */
export function declaredTooLarge(request: Request): boolean {
  const declared = request.headers.get("content-length");
  return declared !== null && /^\d+$/.test(declared) && Number(declared) > MAX_BODY_BYTES;
}

/**
 * Before answering 413, read (and drop) what the client is still sending, up to
 * a bound: closing the connection under a client in mid-upload makes it see a
 * connection reset instead of the 413.
 */
const DRAIN_LIMIT_BYTES = 1024 * 1024;

async function drain(reader: ReadableStreamDefaultReader<Uint8Array>, alreadyRead: number): Promise<void> {
  let size = alreadyRead;
  try {
    while (size <= DRAIN_LIMIT_BYTES) {
      const { done, value } = await reader.read();
      if (done) return;
      size += value.byteLength;
    }
    await reader.cancel();
  } catch {
    // The client went away or the server's own body limit hit: nothing left to drain.
  }
}

/** Drops a request body that is too large, then returns the 413 error to send. */
export async function refuseTooLarge(request: Request): Promise<ApiError> {
  if (request.body && !request.bodyUsed) await drain(request.body.getReader(), 0);
  return tooLarge();
}

/**
 * The request body, read up to the limit: a chunked or lying client cannot make
 * the portal buffer more than MAX_BODY_BYTES.
 */
export async function readBody(request: Request): Promise<Uint8Array<ArrayBuffer>> {
  if (declaredTooLarge(request)) throw await refuseTooLarge(request);
  if (!request.body) return new Uint8Array(0);
  const reader = request.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > MAX_BODY_BYTES) {
      await drain(reader, size);
      throw tooLarge();
    }
    chunks.push(value);
  }
  const body = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return body;
}
