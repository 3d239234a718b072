/** What the pages show about each provider; safe for the browser (no secrets, no server code). */

export const PROVIDER_NAMES = ["openai", "anthropic", "gemini", "fireworks"] as const;
export type ProviderName = (typeof PROVIDER_NAMES)[number];

export interface ProviderDisplay {
  label: string;
  /** The documented key format, as the user documentation writes it. */
  keyFormat: string;
}

export const PROVIDERS: Record<ProviderName, ProviderDisplay> = {
  openai: { label: "OpenAI", keyFormat: "sk-..." },
  anthropic: { label: "Anthropic", keyFormat: "sk-ant-..." },
  gemini: { label: "Google Gemini", keyFormat: "AI..." },
  fireworks: { label: "Fireworks AI", keyFormat: "fw..." },
};

export function isProviderName(value: unknown): value is ProviderName {
  return typeof value === "string" && (PROVIDER_NAMES as readonly string[]).includes(value);
}

export function providerLabel(name: string): string {
  return isProviderName(name) ? PROVIDERS[name].label : name;
}
