/**
 * Dates as the pages show them: the same text on the server and in the
 * browser (no locale or time zone of either), so hydration never differs.
 */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return "";
  const match = /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2})/.exec(iso);
  return match ? `${match[1]} ${match[2]} UTC` : iso;
}
