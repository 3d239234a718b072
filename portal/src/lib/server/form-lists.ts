/**
 * Form fields the token and account pages share: a list of organisations as
 * typed (comma- or space-separated ids), and an expiry chosen as a duration.
 */

/** "acme, globex" → ["acme", "globex"]; empty → null (every organisation). Duplicates are dropped. */
export function organizationList(text: string): string[] | null {
  const ids = [...new Set(text.split(/[\s,]+/).filter((id) => id !== ""))];
  return ids.length === 0 ? null : ids;
}

/** The expiries the token form offers, in days; "" is never. */
export const EXPIRY_CHOICES = ["", "7", "30", "90", "365"] as const;
export type ExpiryChoice = (typeof EXPIRY_CHOICES)[number];

export function isExpiryChoice(value: string): value is ExpiryChoice {
  return (EXPIRY_CHOICES as readonly string[]).includes(value);
}

/** When a token made now with this choice expires (ISO 8601), or null for never. */
export function expiryFrom(choice: ExpiryChoice, now = Date.now()): string | null {
  return choice === "" ? null : new Date(now + Number(choice) * 86_400_000).toISOString();
}

/** A rotation's overlap field as posted: a whole number of seconds, 0-86400; else null. */
export function overlapSeconds(text: string): number | null {
  if (!/^\d{1,5}$/.test(text)) return null;
  const value = Number(text);
  return value <= 86_400 ? value : null;
}
