import type { ProviderName } from "../db/entities.js";

export interface ProviderInfo {
  name: ProviderName;
  label: string;
  /** The documented key prefix, checked when no api_base is set. */
  keyPrefix: string;
  /** Environment variables consulted, in order, when an organisation has no active key. */
  envVars: readonly string[];
}

export const PROVIDERS: Readonly<Record<ProviderName, ProviderInfo>> = {
  openai: { name: "openai", label: "OpenAI", keyPrefix: "sk-", envVars: ["OPENAI_API_KEY"] },
  anthropic: { name: "anthropic", label: "Anthropic", keyPrefix: "sk-ant-", envVars: ["ANTHROPIC_API_KEY"] },
  gemini: { name: "gemini", label: "Google Gemini", keyPrefix: "AI", envVars: ["GEMINI_API_KEY", "GOOGLE_API_KEY"] },
  fireworks: { name: "fireworks", label: "Fireworks AI", keyPrefix: "fw", envVars: ["FIREWORKS_API_KEY"] },
};

export const PROVIDER_NAMES = Object.keys(PROVIDERS) as ProviderName[];

/** The provider whose documented prefix a key carries, most specific prefix first. */
export function providerOfKey(apiKey: string): ProviderInfo | undefined {
  return Object.values(PROVIDERS)
    .filter((p) => apiKey.startsWith(p.keyPrefix))
    .sort((a, b) => b.keyPrefix.length - a.keyPrefix.length)[0];
}

/**
 * Environment fallback keys, read once at start-up. Empty values count as unset.
 */
export function environmentKeys(env: NodeJS.ProcessEnv): Map<ProviderName, { apiKey: string; variable: string }> {
  const keys = new Map<ProviderName, { apiKey: string; variable: string }>();
  for (const provider of Object.values(PROVIDERS)) {
    for (const variable of provider.envVars) {
      const value = env[variable]?.trim();
      if (value) {
        keys.set(provider.name, { apiKey: value, variable });
        break;
      }
    }
  }
  return keys;
}
