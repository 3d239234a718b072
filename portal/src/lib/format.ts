/**
 * Dates as the pages show them: the same text on the server and in the
 * browser (no locale or time zone of either), so hydration never differs.
 */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(iso);
  return match ? `${match[1]} ${match[2]} UTC` : iso;
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
/** Older (or further ahead) than this, a time is shown as its date. */
const RELATIVE_LIMIT = 30 * DAY;

function count(n: number, unit: string): string {
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

/**
 * A time relative to `now` (ms since the epoch): "just now", "3 min ago",
 * "in 2 hours", "5 days ago"; beyond 30 days either way, its date
 * ("2026-05-18"). The same text for the same two instants, wherever computed.
 */
export function relativeTime(iso: string | null | undefined, now: number): string {
  if (!iso) return "";
  const at = Date.parse(iso);
  if (Number.isNaN(at)) return iso;
  const diff = now - at;
  const span = Math.abs(diff);
  if (span >= RELATIVE_LIMIT) return formatTime(iso).split(" ")[0]!;
  if (span < MINUTE) return "just now";
  const text = span < HOUR ? `${Math.floor(span / MINUTE)} min` : span < DAY ? count(Math.floor(span / HOUR), "hour") : count(Math.floor(span / DAY), "day");
  return diff > 0 ? `${text} ago` : `in ${text}`;
}
