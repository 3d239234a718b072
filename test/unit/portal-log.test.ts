import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { createPortalLogger } from "../../portal/src/lib/server/log.js";

/** A portal logger whose lines land in `lines`. */
function capture(level = "info") {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      lines.push(...chunk.toString().split("\n").filter(Boolean));
      done();
    },
  });
  return { logger: createPortalLogger(level, sink), lines };
}

describe("the portal's logs (portal/src/lib/server/log.js)", () => {
  it("writes JSON lines with the service's numeric levels", () => {
    const { logger, lines } = capture();
    logger.info({ path: "/healthz" }, "up");
    logger.error("down");
    logger.debug("not at info");
    expect(lines.map((line) => JSON.parse(line) as { level: number; msg: string })).toMatchObject([
      { level: 30, msg: "up", path: "/healthz" },
      { level: 50, msg: "down" },
    ]);
  });

  it("never writes a token, cookie, password or key that slipped into a log object", () => {
    const { logger, lines } = capture();
    const secrets = ["pc_live_token", "pc_session=abc123", "Bearer pc_header", "correct horse battery", "sk-live-key", "sk-other-key", "pc_admin"];
    logger.error(
      {
        token: secrets[0],
        headers: { cookie: secrets[1], authorization: secrets[2] },
        password: secrets[3],
        body: { api_key: secrets[4], apiKey: secrets[5] },
        SERVICE_ADMIN_TOKEN: secrets[6],
      },
      "request failed",
    );
    expect(lines).toHaveLength(1);
    for (const secret of secrets) expect(lines[0]).not.toContain(secret);
    expect(JSON.parse(lines[0])).toMatchObject({ token: "[redacted]", headers: { cookie: "[redacted]" }, body: { api_key: "[redacted]" } });
  });

  it("serialises an error by type, code, message and stack", () => {
    const { logger, lines } = capture();
    logger.error({ err: Object.assign(new TypeError("no such thing"), { code: "E_THING" }) }, "failed");
    logger.error({ err: "a string" }, "failed");
    const [first, second] = lines.map((line) => JSON.parse(line) as { err: Record<string, unknown> });
    expect(first.err).toMatchObject({ type: "TypeError", code: "E_THING", message: "no such thing" });
    expect(first.err.stack).toMatch(/^TypeError: no such thing\n/);
    expect(second.err).toEqual({ type: "string" });
  });
});
