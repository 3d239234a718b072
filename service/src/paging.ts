import { invalid, type ServiceError } from "./errors.js";

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 200;

/** 0 means the default; above the maximum is capped; negative is refused. */
export function pageSize(requested: number, field = "page_size"): number {
  if (!Number.isInteger(requested) || requested < 0) throw invalid(field, "must be zero or a positive integer");
  if (requested === 0) return DEFAULT_PAGE_SIZE;
  return Math.min(requested, MAX_PAGE_SIZE);
}

/** What makes and checks the MACs of page tokens: the keyring (keyring/index.ts), whose keys every replica shares. */
export interface PageTokenMac {
  pageTokenMac(content: Buffer): Buffer;
  checkPageTokenMac(content: Buffer, mac: Buffer): boolean;
}

/** The sort key of the last row of a page, which the next page starts after. */
export type PageKey = Array<string | number>;

/** A token's MAC length: keyring's PAGE_TOKEN_MAC_BYTES (the keyring checks it). */
const MAC_BYTES = 16;
/** Longer tokens are refused before they are decoded; real ones are well under 200 characters. */
const MAX_TOKEN_LENGTH = 1024;

/** A page token that is not one this service made for this listing, or that holds a value the listing cannot use. */
export function malformedPageToken(field = "page_token"): ServiceError {
  return invalid(field, "is malformed; pass the next_page_token of the previous page unchanged");
}

/**
 * Page tokens: opaque to callers and authenticated. A token is base64url of a MAC and the JSON of
 * [list, scope, sort key]; the MAC (HMAC-SHA256 under a key derived from MASTER_KEY) makes a forged or edited
 * token a 400 naming the field, and the list and scope (e.g. the organisation) make a token of another listing
 * one too. Tokens work on every replica and across restarts, until MASTER_KEY no longer holds the key that made them.
 */
export class PageTokens {
  constructor(private readonly mac: PageTokenMac) {}

  encode(list: string, scope: string, key: PageKey): string {
    const content = Buffer.from(JSON.stringify([list, scope, key]), "utf8");
    return Buffer.concat([this.mac.pageTokenMac(content), content]).toString("base64url");
  }

  /** The sort key a token of this list and scope carries, of this shape; undefined for "" (the first page). */
  decode<T extends PageKey>(list: string, scope: string, token: string, shape: Array<"string" | "number">, field = "page_token"): T | undefined {
    if (token === "") return undefined;
    if (token.length > MAX_TOKEN_LENGTH || !/^[A-Za-z0-9_-]+$/.test(token)) throw malformedPageToken(field);
    const bytes = Buffer.from(token, "base64url");
    const content = bytes.subarray(MAC_BYTES);
    if (bytes.length <= MAC_BYTES || !this.mac.checkPageTokenMac(content, bytes.subarray(0, MAC_BYTES))) throw malformedPageToken(field);
    let parsed: unknown;
    try {
      parsed = JSON.parse(content.toString("utf8"));
    } catch {
      throw malformedPageToken(field);
    }
    if (!Array.isArray(parsed) || parsed.length !== 3 || parsed[0] !== list) throw malformedPageToken(field);
    if (parsed[1] !== scope) {
      throw invalid(field, "was made for another organization's list; start again from the first page without it");
    }
    const key: unknown = parsed[2];
    // PostgreSQL text cannot hold NUL: a string with one could only fail in the query.
    if (
      !Array.isArray(key) ||
      key.length !== shape.length ||
      key.some((v, i) => typeof v !== shape[i] || (typeof v === "string" && v.includes("\u0000")) || (typeof v === "number" && !Number.isFinite(v)))
    ) {
      throw malformedPageToken(field);
    }
    return key as T;
  }
}
