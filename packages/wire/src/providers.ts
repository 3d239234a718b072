// The provider registry: the one place that says which LLM providers exist and what the service
// and the portal need to know of each. The proto enum `Provider`, the database's check
// constraints (a migration) and this registry must name the same providers:
// test/integration/provider-registry.test.ts fails when they do not. Plain data, no imports: the
// portal's pages read it too.

export interface ProviderInfo {
  /** The name stored in the database and used by the REST API. */
  name: string;
  /** The proto enum value's name (`Provider.OPENAI`). */
  enumName: string;
  label: string;
  /** The documented key prefix, checked when no api_base is set. */
  keyPrefix: string;
  /** What a key hint shows of a key that starts with it, when more than keyPrefix (Gemini's keys start `AIza`); not checked. */
  hintPrefix?: string;
  /** Environment variables consulted, in order, when an organisation has no active key. */
  envVars: readonly string[];
  /** Provider values of the SaaS LiteLLM service that mean this provider (compared ignoring case). */
  legacyNames: readonly string[];
  /** Where its API is when a credential sets no api_base. */
  defaultApiBase: string;
  /** How a request carries the key: `Authorization: Bearer`, or a header of its own. */
  auth: { header: "authorization"; scheme: "Bearer" } | { header: string; extra?: Readonly<Record<string, string>> };
}

export const PROVIDERS = {
  openai: {
    name: "openai",
    enumName: "OPENAI",
    label: "OpenAI",
    keyPrefix: "sk-",
    envVars: ["OPENAI_API_KEY"],
    legacyNames: ["openai"],
    defaultApiBase: "https://api.openai.com",
    auth: { header: "authorization", scheme: "Bearer" },
  },
  anthropic: {
    name: "anthropic",
    enumName: "ANTHROPIC",
    label: "Anthropic",
    keyPrefix: "sk-ant-",
    envVars: ["ANTHROPIC_API_KEY"],
    legacyNames: ["anthropic"],
    defaultApiBase: "https://api.anthropic.com",
    auth: { header: "x-api-key", extra: { "anthropic-version": "2023-06-01" } },
  },
  gemini: {
    name: "gemini",
    enumName: "GEMINI",
    label: "Google Gemini",
    keyPrefix: "AI",
    hintPrefix: "AIza",
    envVars: ["GEMINI_API_KEY", "GOOGLE_API_KEY"],
    legacyNames: ["gemini", "google"],
    defaultApiBase: "https://generativelanguage.googleapis.com",
    auth: { header: "x-goog-api-key" },
  },
  fireworks: {
    name: "fireworks",
    enumName: "FIREWORKS",
    label: "Fireworks AI",
    keyPrefix: "fw",
    envVars: ["FIREWORKS_API_KEY"],
    legacyNames: ["fireworks", "fireworks_ai"],
    defaultApiBase: "https://api.fireworks.ai",
    auth: { header: "authorization", scheme: "Bearer" },
  },
} as const satisfies Record<string, ProviderInfo>;

export type ProviderName = keyof typeof PROVIDERS;

export const PROVIDER_NAMES = Object.keys(PROVIDERS) as ProviderName[];

export function isProviderName(value: unknown): value is ProviderName {
  return typeof value === "string" && Object.hasOwn(PROVIDERS, value);
}

/** The provider whose documented prefix a key carries, most specific prefix first. */
export function providerOfKey(apiKey: string): ProviderInfo | undefined {
  return Object.values(PROVIDERS as Record<ProviderName, ProviderInfo>)
    .filter((p) => apiKey.startsWith(p.keyPrefix))
    .sort((a, b) => b.keyPrefix.length - a.keyPrefix.length)[0];
}

/**
 * Environment fallback keys, read once at start-up. Empty values count as unset.
 */
export function environmentKeys(env: NodeJS.ProcessEnv): Map<ProviderName, { apiKey: string; variable: string }> {
  const keys = new Map<ProviderName, { apiKey: string; variable: string }>();
  for (const name of PROVIDER_NAMES) {
    for (const variable of PROVIDERS[name].envVars) {
      const value = env[variable]?.trim();
      if (value) {
        keys.set(name, { apiKey: value, variable });
        break;
      }
    }
  }
  return keys;
}
