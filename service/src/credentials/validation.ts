import { invalid } from "../errors.js";
import type { ProviderName } from "../db/entities.js";
import { PROVIDERS, providerOfKey } from "@provider-credentials/wire/providers";

/** The masked form shown instead of a key (`sk-…Ab12`). */
export { keyHint } from "@provider-credentials/wire/masking";

const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;
const CONTROL_CHARACTERS = /\p{Cc}/u;
/**
 * Characters that change how text shows without showing themselves: format characters (Cf: the bidi overrides
 * that make "gnp.exe" show as "exe.png", zero-width spaces and joiners, the soft hyphen), lone surrogates, and the
 * line and paragraph separators.
 */
const INVISIBLE_CHARACTERS = /[\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/u;
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

/** A new organisation or team id: an id (validateId) that is not shaped like a provider key. */
export function validateNewId(field: string, value: string): string {
  return refuseKeyShaped(field, validateId(field, value));
}

/** Display names: trimmed, 1-200 characters, no control or invisible formatting characters, nothing shaped like a provider key. */
export function validateName(field: string, value: string): string {
  const name = value.trim();
  if (name === "") throw invalid(field, "is required");
  if ([...name].length > NAME_MAX_LENGTH) throw invalid(field, `must be at most ${NAME_MAX_LENGTH} characters`);
  return refuseKeyShaped(field, refuseInvisible(field, name));
}

/** Refuses control characters and invisible formatting characters (Cf and the like) in a free-text field. */
export function refuseInvisible(field: string, text: string): string {
  if (CONTROL_CHARACTERS.test(text)) throw invalid(field, "must not contain control characters");
  const found = INVISIBLE_CHARACTERS.exec(text)?.[0];
  if (found !== undefined) {
    const code = found.codePointAt(0)!.toString(16).toUpperCase().padStart(4, "0");
    throw invalid(field, `must not contain invisible formatting characters (found U+${code}), which can make text show as something else`);
  }
  return text;
}

/**
 * The form in which names are compared for uniqueness: NFKC, then case-folded (upper then lower case, so that
 * "ß" meets "SS" and "ς" meets "σ"), then NFKC again. "ｐｒｏｄ", "PROD" and "prod" have one form.
 */
export function comparableName(name: string): string {
  return name.normalize("NFKC").toUpperCase().toLowerCase().normalize("NFKC");
}

/** A provider's key prefix at the start of a word, and the key characters after it. */
const KEY_CANDIDATE = new RegExp(
  `(?<![A-Za-z0-9])(?:${Object.values(PROVIDERS)
    .map((p) => p.keyPrefix.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
    .sort((a, b) => b.length - a.length)
    .join("|")})([A-Za-z0-9._~+/=-]{20,})`,
  "g",
);

/**
 * Whether the text holds something shaped like a provider key: a registry key prefix (sk-, sk-ant-, AI, fw) at
 * the start of a word, followed by at least 20 key characters that look random, as secrets do and chosen names
 * do not: they switch between lower case, upper case and digits at least 8 times, or hold a run of 20 letters and
 * digits mixed ("sk-team-prod-2024" is a name; "sk-proj-4fQ…" is a key).
 */
export function looksLikeProviderKey(text: string): boolean {
  for (const match of text.matchAll(KEY_CANDIDATE)) {
    const body = match[1];
    let switches = 0;
    for (let i = 1; i < body.length; i++) {
      const a = charClass(body[i - 1]);
      const b = charClass(body[i]);
      if (a !== undefined && b !== undefined && a !== b) switches += 1;
    }
    if (switches >= 8) return true;
    if (/[A-Za-z0-9]{20,}/.exec(body)?.some((run) => /[A-Za-z]/.test(run) && /[0-9]/.test(run))) return true;
  }
  return false;
}

function charClass(c: string): "lower" | "upper" | "digit" | undefined {
  if (c >= "a" && c <= "z") return "lower";
  if (c >= "A" && c <= "Z") return "upper";
  if (c >= "0" && c <= "9") return "digit";
  return undefined;
}

/** Refuses a value shaped like a provider key in a field that is not secret (stored and shown as it is). Never repeats the value. */
export function refuseKeyShaped(field: string, text: string): string {
  if (looksLikeProviderKey(text)) {
    throw invalid(field, "looks like a provider API key; keys go only in api_key, where they are encrypted and never shown (the value is not repeated here)");
  }
  return text;
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
  refuseInvisible("api_base", text);
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
  return refuseKeyShaped("api_base", text);
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
