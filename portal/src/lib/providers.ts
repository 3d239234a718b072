/** What the pages show about each provider; safe for the browser (no secrets, no server code). */

import { isProviderName, PROVIDER_NAMES as REGISTRY_NAMES, PROVIDERS as REGISTRY, type ProviderName } from "@provider-credentials/wire/providers";

/** The providers of the registry (@provider-credentials/wire/providers), in its order. */
export const PROVIDER_NAMES = REGISTRY_NAMES as readonly ProviderName[];
export type { ProviderName };
export { isProviderName };

export interface ProviderDisplay {
  label: string;
  /** The documented key format, as the user documentation writes it. */
  keyFormat: string;
}

export const PROVIDERS = Object.fromEntries(
  PROVIDER_NAMES.map((name) => [name, { label: REGISTRY[name].label, keyFormat: `${REGISTRY[name].keyPrefix}...` }]),
) as Record<ProviderName, ProviderDisplay>;

export function providerLabel(name: string): string {
  return isProviderName(name) ? PROVIDERS[name].label : name;
}
