// How a provider key is shown where it may not be: its hint (stored as key_hint, shown by the
// service's answers and the portal's pages) and the masking of anything key-shaped in a message.
import { PROVIDERS, type ProviderName } from "./providers.js";

/**
 * The masked form shown instead of a key: the provider prefix (when the key
 * has it; Gemini's `AIza`) and the last 4 characters, e.g. `sk-…Ab12`. Short keys show no tail,
 * so that a hint never reveals a large part of a key.
 */
export function keyHint(apiKey: string, provider: ProviderName): string {
  const { keyPrefix, hintPrefix } = PROVIDERS[provider] as { keyPrefix: string; hintPrefix?: string };
  const prefix = hintPrefix !== undefined && apiKey.startsWith(hintPrefix) ? hintPrefix : apiKey.startsWith(keyPrefix) ? keyPrefix : "";
  const rest = apiKey.slice(prefix.length);
  const tail = rest.length >= 12 ? rest.slice(-4) : "";
  return `${prefix}…${tail}`;
}

/**
 * A provider key prefix (sk-, AI, fw: providers.ts) followed by at least 16
 * more key characters: the shape of an API key, not of an identifier anyone
 * would choose. Such a run in a message is most likely a key pasted into the
 * wrong field.
 */
const KEY_SHAPED = /(?<![A-Za-z0-9._-])(sk-|AI|fw)[A-Za-z0-9._~+/=-]{16,}/g;

/** The text with everything shaped like a provider API key cut down to its hint (`sk-…Ab12`), as key_hint shows keys. */
export function maskKeys(text: string): string {
  return text.replace(KEY_SHAPED, (match, prefix: string) => `${prefix}…${match.slice(-4)}`);
}
