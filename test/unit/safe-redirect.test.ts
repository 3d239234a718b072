import { describe, expect, it } from "vitest";
import { safeRedirectTarget } from "../../portal/src/lib/server/session.js";

// Return paths (sign-in's redirectTo, forms' returnTo and their Cancel links) stay on this
// site: every way of writing another origin falls back to "/".

const ORIGIN = "https://portal.example";

/** Where a browser goes when it is redirected to (or follows a link to) `target` from a page of the portal. */
const browserGoesTo = (target: string) => new URL(target, `${ORIGIN}/credentials/c-1/edit`);

const attacks = [
  // dot segments that collapse into "//host"
  "/..//evil.example/x",
  "/.//evil.example/x",
  "/x/..//evil.example/x",
  "/x/../..//evil.example/x",
  "/%2e%2e//evil.example/x",
  "/%2E%2E//evil.example/x",
  "/%2e//evil.example/x",
  "/%2E//evil.example/x",
  "/.%2e//evil.example/x",
  "/%2e./%2e%2e//evil.example/x",
  // encoded slashes and backslashes, once or twice
  "/%2f/evil.example/x",
  "/%2F%2Fevil.example/x",
  "/%2e%2e%2f%2fevil.example/x",
  "/%5cevil.example/x",
  "/%5C%5Cevil.example/x",
  "/%2f%5cevil.example/x",
  "/%252e%252e//evil.example/x",
  "/%252f%252fevil.example/x",
  "/%25252f%25252fevil.example/x",
  "/%255cevil.example/x",
  // backslashes, which browsers read as slashes
  "/\\evil.example",
  "\\\\evil.example",
  "/\\/evil.example",
  "\\/evil.example",
  // characters that browsers drop from URLs
  "/\t/evil.example",
  "/\n/evil.example",
  "/\r/evil.example",
  "\t//evil.example",
  "/%09/evil.example",
  "/%0a/evil.example",
  "/%0d%0a/evil.example",
  // other origins written directly
  "//evil.example",
  "//evil.example/x",
  "///evil.example",
  "https://evil.example/",
  "https:evil.example",
  "https:",
  "http://evil.example",
  "HTTPS://evil.example",
  "javascript:alert(1)",
  "JavaScript:alert(1)",
  " javascript:alert(1)",
  "data:text/html,<script>alert(1)</script>",
  "evil.example",
  "evil",
  // not a path, or too long
  "",
  "?x=1",
  "#top",
  `/${"a".repeat(2100)}`,
];

describe("safeRedirectTarget refuses every other origin", () => {
  it.each(attacks)("%j → /", (attack) => {
    const target = safeRedirectTarget(attack);
    expect(target).toBe("/");
    expect(browserGoesTo(target).origin).toBe(ORIGIN);
  });

  it("whatever it returns, a browser stays on this origin, also after decoding the path again", () => {
    // Every pair and triple of the building blocks of the attacks above, after "/".
    const parts = ["/", "\\", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "%25", "%252f", "\t", "%09", "evil.example", "x"];
    for (const a of parts) {
      for (const b of parts) {
        for (const c of parts) {
          const target = safeRedirectTarget(`/${a}${b}${c}/evil.example`);
          expect(target.startsWith("/") && !target.startsWith("//"), target).toBe(true);
          expect(browserGoesTo(target).origin, `${a}${b}${c}`).toBe(ORIGIN);
          const decodedOnce = browserGoesTo(target).pathname;
          expect(browserGoesTo(decodeURIComponent(decodedOnce)).origin, `${a}${b}${c}`).toBe(ORIGIN);
        }
      }
    }
  });
});

describe("safeRedirectTarget keeps paths on this site", () => {
  it.each([
    ["/", "/"],
    ["/organizations", "/organizations"],
    ["/organizations/org-1?tab=keys#top", "/organizations/org-1?tab=keys#top"],
    ["/?organization=org-1&provider=openai", "/?organization=org-1&provider=openai"],
    ["/credentials/c-1/edit?returnTo=%2F%3Forganization%3Dorg-1", "/credentials/c-1/edit?returnTo=%2F%3Forganization%3Dorg-1"],
    ["/tokens/ci%20bot/revoke", "/tokens/ci%20bot/revoke"],
    // Dot segments that stay on the site are resolved.
    ["/organizations/../audit", "/audit"],
    ["/a/./b", "/a/b"],
    // A query may hold anything: it is not where the browser goes.
    ["/?next=//evil.example", "/?next=//evil.example"],
    ["/audit?q=https://evil.example", "/audit?q=https://evil.example"],
  ])("%s → %s", (input, expected) => {
    expect(safeRedirectTarget(input)).toBe(expected);
  });

  it("never goes back to the sign-in or sign-out page", () => {
    for (const path of ["/login", "/login?redirectTo=/x", "/logout", "/x/../login", "/%6cogin"]) expect(safeRedirectTarget(path), path).toBe("/");
  });
});
