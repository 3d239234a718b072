import { PROVIDER_NAMES, PROVIDERS, type ProviderName } from "@provider-credentials/wire/providers";

/** Legacy provider values (compared ignoring case and surrounding spaces) and the provider each one is here: the registry's legacyNames. */
const LEGACY_PROVIDERS: ReadonlyMap<string, ProviderName> = new Map(
  PROVIDER_NAMES.flatMap((name) => PROVIDERS[name].legacyNames.map((legacy) => [legacy, name] as const)),
);

export const KNOWN_LEGACY_PROVIDERS = PROVIDER_NAMES.map((name) => PROVIDERS[name].legacyNames.join(" or ")).join(", ");
/** This service's provider for a SaaS LiteLLM provider value, or undefined when it stores no such provider. */
export function mapLegacyProvider(value: string | null): ProviderName | undefined {
  if (value === null) return undefined;
  return LEGACY_PROVIDERS.get(value.trim().toLowerCase());
}
