// What a caller can put into the service's log: headers grpc-js refuses are logged by grpc-js
// itself, before authentication. Those lines go through the service's logger, which redacts
// credentials and caps the length of every string it writes.
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Writable } from "node:stream";
import { createLogger, LOG_STRING_MAX_CHARS } from "../../service/src/logger.js";
import { startTestService, type TestService } from "../support/harness.js";

let t: TestService;

beforeAll(async () => {
  t = await startTestService();
});

afterAll(async () => {
  await t?.close();
});

/** A raw HTTP/2 ResolveKey call on the grpc-js port with the given headers; resolves with the response's headers once the stream ends. */
function rawResolveKey(headers: Record<string, string>): Promise<http2.IncomingHttpHeaders> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://${t.address}`);
    session.on("error", reject);
    const stream = session.request({
      ":method": "POST",
      ":path": "/credentials.v1.CredentialService/ResolveKey",
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    let answer: http2.IncomingHttpHeaders = {};
    stream.on("response", (h) => (answer = { ...answer, ...h }));
    stream.on("trailers", (h) => (answer = { ...answer, ...h }));
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      resolve(answer);
    });
    stream.resume();
    stream.end(Buffer.from([0, 0, 0, 0, 0]));
  });
}

describe("log lines from grpc-js", () => {
  it("never carry the bearer token of a header grpc-js refuses, and none exceeds the cap", async () => {
    const token = t.adminToken;
    const before = t.logs.length;
    await rawResolveKey({
      // A tab and a non-ASCII byte make grpc-js refuse (and log) these values whole.
      authorization: `Bearer ${token}\tnext`,
      "x-note": `Bearer ${token} caf\u00e9`,
      "x-filler": `start\t${"a".repeat(60_000)}`,
    });
    const lines = t.logs.slice(before);
    const fromGrpcJs = lines.filter((line) => (JSON.parse(line) as { component?: string }).component === "grpc-js");
    // The refusals were logged, through the service's logger.
    expect(fromGrpcJs.some((line) => line.includes("x-filler"))).toBe(true);
    expect(fromGrpcJs.some((line) => line.includes("authorization") && line.includes("Bearer [redacted]"))).toBe(true);
    for (const line of lines) {
      expect(line).not.toContain(token);
      expect(line).not.toContain(token.slice(4, 24));
      // One message of at most the cap, its marker and the line's few other fields.
      expect(line.length).toBeLessThan(LOG_STRING_MAX_CHARS + 512);
    }
    expect(fromGrpcJs.some((line) => line.includes("…[cut: "))).toBe(true);
  });

  it("the service's own lines are capped and redacted the same way", async () => {
    const logs: string[] = [];
    const logger = createLogger(
      "info",
      new Writable({
        write(chunk, _encoding, done) {
          logs.push(...String(chunk).split("\n").filter(Boolean));
          done();
        },
      }),
    );
    logger.warn({ detail: `Bearer pct_abcdefghijklmnopqrstuvwxyz ${"b".repeat(10_000)}` }, `header was Bearer secret-token-value ${"c".repeat(10_000)}`);
    const [line] = logs;
    expect(line).toBeDefined();
    expect(line).not.toContain("secret-token-value");
    expect(line).not.toContain("pct_abcdefghijklmnop");
    expect(line.length).toBeLessThan(2 * LOG_STRING_MAX_CHARS + 512);
    const parsed = JSON.parse(line) as { msg: string; detail: string };
    expect(parsed.msg).toMatch(/^header was Bearer \[redacted\] c+…\[cut: \d+ more characters\]$/);
    expect(parsed.detail).toMatch(/^Bearer \[redacted\] b+…\[cut: \d+ more characters\]$/);
  });
});
