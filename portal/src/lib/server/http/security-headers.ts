/**
 * Headers on every response. Pages get their Content-Security-Policy from
 * SvelteKit (kit.csp in svelte.config.js, with nonces or hashes for its own
 * scripts); everything else (JSON, redirects, errors) gets one that allows
 * nothing at all.
 */
export const STRICT_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

export const SECURITY_HEADERS: Record<string, string> = {
  "x-frame-options": "DENY",
  "x-content-type-options": "nosniff",
  "referrer-policy": "strict-origin-when-cross-origin",
  "cross-origin-opener-policy": "same-origin",
  "cross-origin-resource-policy": "same-origin",
  "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
};

/** Adds the security headers (and no-store) to a response, copying it if its headers are immutable. */
export function secure(response: Response, options: { noStore: boolean }): Response {
  let target = response;
  try {
    apply(target.headers, options);
  } catch {
    target = new Response(response.body, { status: response.status, statusText: response.statusText, headers: response.headers });
    apply(target.headers, options);
  }
  return target;
}

function apply(headers: Headers, options: { noStore: boolean }): void {
  for (const [name, value] of Object.entries(SECURITY_HEADERS)) headers.set(name, value);
  if (!headers.has("content-security-policy")) headers.set("content-security-policy", STRICT_CSP);
  if (options.noStore) headers.set("cache-control", "no-store");
}
