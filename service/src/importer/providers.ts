import type { ProviderName } from "../db/entities.js";

/** Legacy provider values (compared ignoring case and surrounding spaces) and the provider each one is here. */
const LEGACY_PROVIDERS: ReadonlyMap<string, ProviderName> = new Map([
  ["openai", "openai"],
  ["anthropic", "anthropic"],
  ["gemini", "gemini"],
  ["google", "gemini"],
  ["fireworks", "fireworks"],
  ["fireworks_ai", "fireworks"],
]);

export const KNOWN_LEGACY_PROVIDERS = "openai, anthropic, gemini or google, fireworks or fireworks_ai";

/** This service's provider for a SaaS LiteLLM provider value, or undefined when it stores no such provider. */
export function mapLegacyProvider(value: string | null): ProviderName | undefined {
  if (value === null) return undefined;
  return LEGACY_PROVIDERS.get(value.trim().toLowerCase());
}
