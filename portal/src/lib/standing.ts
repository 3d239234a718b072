/**
 * How the credentials list words the service's ExplainResolution answer. Only words: which credential is in use,
 * its share and why one is skipped come from the service (ResolveKey's own selection), never worked out here.
 */

export type StandingName = "in_use" | "standby" | "shared" | "skipped_failing" | "inactive" | "zero_weight";

/** The badge of a credential's standing, and its tone (a badge class). */
export function standingDisplay(standing: StandingName, share: number): { label: string; tone: string; title: string } {
  switch (standing) {
    case "in_use":
      return { label: "In use", tone: "active", title: "ResolveKey hands out this key now." };
    case "standby":
      return { label: "Standby", tone: "inactive", title: "Active and healthy, but another key is in use." };
    case "shared":
      return { label: `Share ${formatShare(share)}`, tone: "active", title: "Handed out for this share of the calls." };
    case "skipped_failing":
      return { label: "Skipped: failing", tone: "danger", title: "Marked failing: skipped while a healthy key exists." };
    case "zero_weight":
      return { label: "Weight 0: not picked", tone: "inactive", title: "Weighted selection never picks a key of weight 0 while others have weight." };
    case "inactive":
      return { label: "Inactive", tone: "inactive", title: "Never handed out." };
  }
}

/** 0.25 → "25%"; 1/3 → "33%"; a tiny non-zero share stays visible ("<1%"). */
export function formatShare(share: number): string {
  if (share > 0 && share < 0.005) return "<1%";
  return `${Math.round(share * 100)}%`;
}

export const STRATEGY_LABELS: Record<string, string> = {
  newest: "Newest",
  round_robin: "Round robin",
  weighted: "Weighted",
};
