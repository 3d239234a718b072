import { Code, ConnectError } from "@connectrpc/connect";
import { TRPCError } from "@trpc/server";
import { describe, expect, it } from "vitest";
import { ApiError, fromConnectError, toApiError } from "../../portal/src/lib/server/errors.js";
import { safeRedirectTarget } from "../../portal/src/lib/server/session.js";

describe("gRPC status → HTTP (portal/src/lib/server/errors.ts)", () => {
  const cases: Array<[Code, number, string]> = [
    [Code.InvalidArgument, 400, "bad_request"],
    [Code.OutOfRange, 400, "bad_request"],
    [Code.Unauthenticated, 401, "unauthorized"],
    [Code.PermissionDenied, 403, "forbidden"],
    [Code.NotFound, 404, "not_found"],
    [Code.AlreadyExists, 409, "already_exists"],
    [Code.Aborted, 409, "stale_version"],
    [Code.FailedPrecondition, 409, "failed_precondition"],
    [Code.ResourceExhausted, 429, "too_many_requests"],
    [Code.Canceled, 499, "client_closed_request"],
    [Code.Internal, 500, "internal_error"],
    [Code.DataLoss, 500, "internal_error"],
    [Code.Unimplemented, 501, "not_implemented"],
    [Code.Unknown, 502, "bad_gateway"],
    [Code.Unavailable, 503, "service_unavailable"],
    [Code.DeadlineExceeded, 504, "gateway_timeout"],
  ];
  it.each(cases)("code %i → %i %s", (code, status, apiCode) => {
    const error = fromConnectError(new ConnectError("detail", code));
    expect(error.status).toBe(status);
    expect(error.apiCode).toBe(apiCode);
  });

  it("keeps the service's message for caller errors, hides it for the others", () => {
    expect(fromConnectError(new ConnectError("api_key: too short", Code.InvalidArgument)).message).toBe("api_key: too short");
    const internal = fromConnectError(new ConnectError("relation provider_credentials does not exist at 10.0.0.5", Code.Internal));
    expect(internal.message).toBe("internal error");
    const down = fromConnectError(new ConnectError("connect ECONNREFUSED 127.0.0.1:50051", Code.Unavailable));
    expect(down.message).toBe("the credentials service is unavailable; try again shortly");
  });

  it("names the REST field: page_token is cursor, page_size is limit; issues carry the field", () => {
    const error = fromConnectError(new ConnectError("page_token: is malformed", Code.InvalidArgument));
    expect(error.message).toBe("cursor: is malformed");
    expect(error.issues).toEqual([{ path: "cursor", message: "is malformed" }]);
  });

  it("takes Retry-After from the service's retry-after trailer", () => {
    const error = fromConnectError(new ConnectError("too many failed sign-ins", Code.ResourceExhausted, { "retry-after": "120" }));
    expect(error.retryAfterSeconds).toBe(120);
    expect(error.headers).toEqual({ "retry-after": "120" });
  });

  it("anything unexpected is a bare internal error", () => {
    const error = toApiError(new Error("secret database password in here"));
    expect(error).toBeInstanceOf(ApiError);
    expect(error.body).toEqual({ code: "internal_error", message: "internal error" });
    const wrapped = toApiError(new TRPCError({ code: "INTERNAL_SERVER_ERROR", message: "Output validation failed", cause: new Error("x") }));
    expect(wrapped.body).toEqual({ code: "internal_error", message: "internal error" });
  });
});

describe("safeRedirectTarget", () => {
  it.each([
    ["/", "/"],
    ["/organizations/org-1?tab=keys#top", "/organizations/org-1?tab=keys#top"],
    [null, "/"],
    ["", "/"],
    ["//evil.example", "/"],
    ["/\\evil.example", "/"],
    ["https://evil.example/", "/"],
    ["javascript:alert(1)", "/"],
    ["evil", "/"],
    ["/login?redirectTo=/x", "/"],
    ["/logout", "/"],
    ["/%0d%0aSet-Cookie:x", "/%0d%0aSet-Cookie:x"],
    ["/\tfoo", "/"],
  ])("%s → %s", (input, expected) => {
    expect(safeRedirectTarget(input)).toBe(expected);
  });
});
