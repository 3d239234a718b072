import { invalid } from "../errors.js";
import type { ProviderName } from "../db/entities.js";
import { PROVIDERS, providerOfKey } from "../providers.js";

const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const CONTROL_CHARACTERS = /\p{Cc}/u;
const PRINTABLE_ASCII = /^[\x21-\x7e]+$/;
export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export const API_KEY_MIN_LENGTH = 8;
export const API_KEY_MAX_LENGTH = 4096;
export const NAME_MAX_LENGTH = 200;
export const API_BASE_MAX_LENGTH = 2048;

/** Organisation and team ids: 1-64 of letters, digits, `.`, `_`, `-`. */
export function validateId(field: string, value: string): string {
  if (value === "") throw invalid(field, "is required");
  if (!ID_PATTERN.test(value)) {
    throw invalid(field, "must be 1-64 characters of letters, digits, '.', '_' or '-'");
  }
  return value;
}

export function validateCredentialId(value: string, field = "credential_id"): string {
  if (value === "") throw invalid(field, "is required");
  if (!UUID_PATTERN.test(value)) throw invalid(field, "must be a UUID");
  return value.toLowerCase();
}

/** Display names: trimmed, 1-200 characters, no control characters. */
export function validateName(field: string, value: string): string {
  const name = value.trim();
  if (name === "") throw invalid(field, "is required");
  if ([...name].length > NAME_MAX_LENGTH) throw invalid(field, `must be at most ${NAME_MAX_LENGTH} characters`);
  if (CONTROL_CHARACTERS.test(name)) throw invalid(field, "must not contain control characters");
  return name;
}

/** An absolute http(s) URL without credentials; empty means none. */
export function validateApiBase(value: string): string | null {
  const text = value.trim();
  if (text === "") return null;
  if (text.length > API_BASE_MAX_LENGTH) throw invalid("api_base", `must be at most ${API_BASE_MAX_LENGTH} characters`);
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw invalid("api_base", "must be an absolute http or https URL, e.g. https://proxy.example.com/v1");
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw invalid("api_base", "must use http or https");
  }
  if (!/^https?:\/\//i.test(text)) throw invalid("api_base", "must start with http:// or https://");
  if (/\s/.test(text)) throw invalid("api_base", "must not contain whitespace");
  if (CONTROL_CHARACTERS.test(text)) throw invalid("api_base", "must not contain control characters");
  // WHATWG URLs read "\\" as "/", RFC 3986 parsers (Python's urllib, many proxies) do not:
  // "https://good.com\\user:pass@evil.com" is another host and a password to them.
  if (text.includes("\\")) throw invalid("api_base", "must not contain a backslash");
  const authority = /^https?:\/\/([^/?#]*)/i.exec(text)?.[1] ?? "";
  if (url.username !== "" || url.password !== "" || authority.includes("@")) {
    throw invalid("api_base", "must not contain a user name or password; store secrets in api_key");
  }
  // A query or fragment would be shown wherever api_base is (responses, the portal, the audit log).
  if (text.includes("?") || text.includes("#")) {
    throw invalid("api_base", "must not have a query or fragment (?...#...); store secrets in api_key");
  }
  return text;
}

/**
 * Provider keys: surrounding whitespace trimmed; printable ASCII; 8-4096
 * characters; the provider's documented prefix unless an API base (a proxy)
 * is set. Messages never repeat the key.
 */
export function validateApiKey(value: string, provider: ProviderName, apiBase: string | null): string {
  const apiKey = value.trim();
  if (apiKey === "") throw invalid("api_key", "is required");
  if (!PRINTABLE_ASCII.test(apiKey)) {
    throw invalid("api_key", "must contain only printable ASCII characters, with no spaces or line breaks inside");
  }
  if (apiKey.length < API_KEY_MIN_LENGTH) throw invalid("api_key", `must be at least ${API_KEY_MIN_LENGTH} characters`);
  if (apiKey.length > API_KEY_MAX_LENGTH) throw invalid("api_key", `must be at most ${API_KEY_MAX_LENGTH} characters`);
  if (apiBase === null) {
    const expected = PROVIDERS[provider];
    const looksLike = providerOfKey(apiKey);
    if (looksLike?.name !== provider) {
      const hint = looksLike ? `; it looks like ${articleFor(looksLike.label)} ${looksLike.label} key` : "";
      throw invalid("api_key", `${expected.label} keys start with "${expected.keyPrefix}"${hint} (with an api_base for a proxy, any format is accepted)`);
    }
  }
  return apiKey;
}

function articleFor(word: string): string {
  return /^[AEIOU]/i.test(word) ? "an" : "a";
}

/**
 * The masked form shown instead of a key: the provider prefix (when the key
 * has it) and the last 4 characters, e.g. `sk-…Ab12`. Short keys show no tail,
 * so that a hint never reveals a large part of a key.
 */
export function keyHint(apiKey: string, provider: ProviderName): string {
  const prefix = apiKey.startsWith(PROVIDERS[provider].keyPrefix) ? PROVIDERS[provider].keyPrefix : "";
  const rest = apiKey.slice(prefix.length);
  const tail = rest.length >= 12 ? rest.slice(-4) : "";
  return `${prefix}…${tail}`;
}
