// How the Connect port (connect-node, ours) treats two things the gRPC spec settles and grpc-js
// (the gRPC port) gets wrong (docs/security.md, known upstream limits): a method other than POST,
// and a grpc-timeout too large for a timer.
import http2 from "node:http2";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestService, type TestService } from "../support/harness.js";

let t: TestService;

beforeAll(async () => {
  t = await startTestService();
});

afterAll(async () => {
  await t?.close();
});

interface Answer {
  status: number;
  grpcStatus: string | undefined;
  grpcMessage: string | undefined;
  body: Buffer;
}

/** One raw HTTP/2 request with the gRPC protocol's headers to the Connect port; an empty request message for POST. */
function rawCall(method: string, path: string, headers: Record<string, string> = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${t.service.connectPort}`);
    session.on("error", reject);
    const stream = session.request({
      ":method": method,
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      authorization: `Bearer ${t.adminToken}`,
      ...headers,
    });
    const answer: Answer = { status: 0, grpcStatus: undefined, grpcMessage: undefined, body: Buffer.alloc(0) };
    const take = (h: http2.IncomingHttpHeaders) => {
      if (h[":status"] !== undefined) answer.status = Number(h[":status"]);
      if (h["grpc-status"] !== undefined) answer.grpcStatus = String(h["grpc-status"]);
      if (h["grpc-message"] !== undefined) answer.grpcMessage = String(h["grpc-message"]);
    };
    stream.on("response", take);
    stream.on("trailers", take);
    stream.on("data", (chunk: Buffer) => (answer.body = Buffer.concat([answer.body, chunk])));
    stream.on("error", reject);
    stream.on("close", () => {
      session.close();
      resolve(answer);
    });
    if (method === "POST") stream.end(Buffer.from([0, 0, 0, 0, 0]));
    else stream.end();
  });
}

const LIST = "/credentials.v1.OrganizationService/ListOrganizations";

describe("the Connect port, with the gRPC protocol", () => {
  it("refuses a method other than POST", async () => {
    for (const method of ["GET", "PUT", "DELETE"]) {
      const answer = await rawCall(method, LIST);
      expect(answer.status === 405 || (answer.grpcStatus !== undefined && answer.grpcStatus !== "0"), `${method}: ${JSON.stringify(answer)}`).toBe(true);
      expect(answer.grpcStatus).not.toBe("0");
    }
    // The same call by POST answers.
    expect(await rawCall("POST", LIST)).toMatchObject({ status: 200, grpcStatus: "0" });
  });

  it("treats a grpc-timeout too large for a timer as a long deadline, not an immediate one", async () => {
    for (const timeout of ["2147484S", "99999999M", "99999999H"]) {
      expect(await rawCall("POST", LIST, { "grpc-timeout": timeout }), timeout).toMatchObject({ status: 200, grpcStatus: "0" });
      // A Health Watch stream lives until its deadline: after its first message and a whole other
      // call (a database round trip), it is still open, where an immediate deadline would have ended it.
      const watch = await openWatch({ "grpc-timeout": timeout });
      try {
        expect(await rawCall("POST", LIST)).toMatchObject({ status: 200, grpcStatus: "0" });
        expect(watch.ended(), `${timeout}: ${JSON.stringify(watch.trailers)}`).toBe(false);
      } finally {
        watch.close();
      }
    }
    // A deadline does end the stream: a short one, once it passes.
    const short = await openWatch({ "grpc-timeout": "50m" });
    await short.closed;
    expect(short.ended()).toBe(true);
    // A value that is not a timeout is refused.
    const malformed = await rawCall("POST", LIST, { "grpc-timeout": "123456789S" });
    expect(malformed.grpcStatus).toBe("3");
  });
});

/** A Health Watch stream on the Connect port, once its first message has arrived. */
async function openWatch(headers: Record<string, string>): Promise<{
  ended(): boolean;
  trailers: http2.IncomingHttpHeaders | undefined;
  closed: Promise<http2.IncomingHttpHeaders | undefined>;
  close(): void;
}> {
  const session = http2.connect(`http://127.0.0.1:${t.service.connectPort}`);
  const stream = session.request({
    ":method": "POST",
    ":path": "/grpc.health.v1.Health/Watch",
    "content-type": "application/grpc",
    te: "trailers",
    ...headers,
  });
  const state: { trailers: http2.IncomingHttpHeaders | undefined; done: boolean } = { trailers: undefined, done: false };
  stream.on("trailers", (h) => (state.trailers = h));
  stream.on("response", (h) => {
    if (h["grpc-status"] !== undefined) state.trailers = h; // trailers-only answer
  });
  const closed = new Promise<http2.IncomingHttpHeaders | undefined>((resolve) =>
    stream.on("close", () => {
      state.done = true;
      session.close();
      resolve(state.trailers);
    }),
  );
  stream.on("error", () => undefined);
  stream.end(Buffer.from([0, 0, 0, 0, 0]));
  await new Promise<void>((resolve) => {
    stream.once("data", () => resolve());
    void closed.then(() => resolve());
  });
  return {
    ended: () => state.done || state.trailers !== undefined,
    get trailers() {
      return state.trailers;
    },
    closed,
    close: () => {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    },
  };
}
