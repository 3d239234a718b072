import { Code, ConnectError } from "@connectrpc/connect";
import { TRPCError } from "@trpc/server";
import { describe, expect, it } from "vitest";
import { ApiError, fromConnectError, toApiError } from "../../portal/src/lib/server/errors.js";
import { safeRedirectTarget } from "../../portal/src/lib/server/session.js";
import { invalid, ServiceError } from "../../service/src/errors.js";
import { toConnectError } from "../../service/src/rpc/errors.js";
import { createLogger } from "../../service/src/logger.js";

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

  // The service's errors as the portal receives them: through the service's own status map.
  const fromService = (error: ServiceError) => fromConnectError(toConnectError(error, createLogger("silent"), "test"));

  it("reads the field at fault from the error's details and names it as REST does: page_token is cursor", () => {
    const error = fromService(invalid("page_token", "is malformed"));
    expect(error.message).toBe("cursor: is malformed");
    expect(error.issues).toEqual([{ path: "cursor", message: "is malformed" }]);
  });

  it("never parses a message: without details, a message that looks like `field: problem` names no field", () => {
    const error = fromConnectError(new ConnectError("api_key: must start with sk-", Code.InvalidArgument));
    expect(error.message).toBe("api_key: must start with sk-");
    expect(error.issues).toBeUndefined();
    expect(error.field).toBeUndefined();
  });

  it("a refusal about one field (a duplicate name) names it for the form, and keeps the REST body as it was", () => {
    const error = fromService(
      new ServiceError("already_exists", 'credential_name: a credential named "A" already exists', "credential_name", undefined, "CREDENTIAL_NAME_TAKEN"),
    );
    expect(error.field).toEqual({ path: "credential_name", message: 'a credential named "A" already exists' });
    expect(error.body).toEqual({ code: "already_exists", message: 'credential_name: a credential named "A" already exists' });
  });

  it("takes Retry-After from the service's RetryInfo", () => {
    const error = fromService(new ServiceError("resource_exhausted", "too many failed sign-ins", undefined, 120, "TOO_MANY_SIGN_INS"));
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
