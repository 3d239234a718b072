/** The fleet views of the credentials page (`?view=`), across every organisation; safe for the browser. */
export const FLEET_VIEWS = ["failing", "rotation_due", "inactive", "uncovered"] as const;
export type FleetView = (typeof FLEET_VIEWS)[number];

export const FLEET_VIEW_LABELS: Record<FleetView, string> = {
  failing: "Failing",
  rotation_due: "Rotation due",
  inactive: "Inactive",
  uncovered: "No key and no fallback",
};

/** The page sizes a list offers (`?size=`); the first is the default. */
export const PAGE_SIZES = [25, 50, 100] as const;
