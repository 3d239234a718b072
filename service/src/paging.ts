import { invalid } from "./errors.js";

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 200;

/** 0 means the default; above the maximum is capped; negative is refused. */
export function pageSize(requested: number, field = "page_size"): number {
  if (!Number.isInteger(requested) || requested < 0) throw invalid(field, "must be zero or a positive integer");
  if (requested === 0) return DEFAULT_PAGE_SIZE;
  return Math.min(requested, MAX_PAGE_SIZE);
}

/** Page tokens are opaque to callers: base64url of a JSON array holding the last row's sort key. */
export function encodePageToken(key: Array<string | number>): string {
  return Buffer.from(JSON.stringify(key), "utf8").toString("base64url");
}

export function decodePageToken<T extends Array<string | number>>(token: string, shape: Array<"string" | "number">, field = "page_token"): T | undefined {
  if (token === "") return undefined;
  let key: unknown;
  try {
    if (!/^[A-Za-z0-9_-]+$/.test(token)) throw new Error("not base64url");
    key = JSON.parse(Buffer.from(token, "base64url").toString("utf8"));
  } catch {
    throw invalid(field, "is malformed; pass the next_page_token of the previous page unchanged");
  }
  // PostgreSQL text cannot hold NUL: a string with one could only fail in the query.
  if (!Array.isArray(key) || key.length !== shape.length || key.some((v, i) => typeof v !== shape[i] || (typeof v === "string" && v.includes("\u0000")))) {
    throw invalid(field, "is malformed; pass the next_page_token of the previous page unchanged");
  }
  return key as T;
}
