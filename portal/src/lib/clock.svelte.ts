/**
 * The browser's idea of "now" for relative times, set once a minute after the
 * page has started (see +layout.svelte); null on the server and until then,
 * when pages use the time the server rendered them at (the layout's `now`),
 * so that the text rendered on the server is the text the browser hydrates.
 */
export const clock: { now: number | null } = $state({ now: null });
