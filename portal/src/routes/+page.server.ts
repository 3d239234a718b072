import type { Actions, PageServerLoad } from "./$types";
import { isProviderName, providerLabel, type ProviderName } from "$lib/providers";
import { outcomeDisplay } from "$lib/key-health";
import { FLEET_VIEWS, PAGE_SIZES, type FleetView } from "$lib/fleet";
import { callerFor, describeFailure, field, loadFailed, type PageCaller, redirectWithFlash, returnTo } from "$lib/server/page-actions";

/** The cookie that remembers the organisation last opened here: `/` without parameters opens it again. */
const LAST_ORGANIZATION_COOKIE = "last_organization";
/** Organisations listed when a typed name is not an exact id (the picker without JavaScript). */
const MATCHES_SHOWN = 25;

type Caller = PageCaller;
type CredentialList = Awaited<ReturnType<Caller["credentials"]["list"]>>;
type Search = Awaited<ReturnType<Caller["credentials"]["search"]>>;
type Uncovered = Awaited<ReturnType<Caller["organizations"]["uncovered"]>>;
type Resolution = Awaited<ReturnType<Caller["resolution"]["explain"]>>;

/** The page number and size in the URL (`page`, `size`), and the offset they make. */
function paging(url: URL) {
  const sizeParam = Number(url.searchParams.get("size"));
  const size = (PAGE_SIZES as readonly number[]).includes(sizeParam) ? sizeParam : PAGE_SIZES[0];
  const pageParam = Number(url.searchParams.get("page"));
  const pageNumber = Number.isInteger(pageParam) && pageParam >= 1 && pageParam <= 1_000_000 ? pageParam : 1;
  return { size, pageNumber, offset: (pageNumber - 1) * size };
}

/**
 * The Provider Credentials page. Everything it shows lives in the URL: one organisation's credentials
 * (`?organization=org-1&provider=openai&rotation_due=true&failing=true`), a search across all of them
 * (`?q=prod`), a fleet view (`?view=failing|rotation_due|inactive|uncovered`), and the page (`page`, `size`).
 */
export const load: PageServerLoad = async (event) => {
  const { url, cookies } = event;
  const caller = callerFor(event);
  const providerParam = url.searchParams.get("provider") ?? "";
  const provider: ProviderName | null = isProviderName(providerParam) ? providerParam : null;
  const rotationDue = url.searchParams.get("rotation_due") === "true";
  const failing = url.searchParams.get("failing") === "true";
  const q = (url.searchParams.get("q") ?? "").trim().slice(0, 200);
  const viewParam = url.searchParams.get("view") ?? "";
  const view = (FLEET_VIEWS as readonly string[]).includes(viewParam) ? (viewParam as FleetView) : null;
  const { size, pageNumber, offset } = paging(url);
  const typed = url.searchParams.get("organization")?.trim() ?? "";
  const remembered = cookies.get(LAST_ORGANIZATION_COOKIE) ?? "";
  const hasParams = [...url.searchParams.keys()].length > 0;
  const organization = typed !== "" ? typed : hasParams ? "" : remembered;

  const base = {
    q,
    view,
    provider,
    providerInvalid: providerParam !== "" && provider === null,
    rotationDue,
    failing,
    size,
    pageNumber,
    offset,
    organization,
    organizationName: null as string | null,
    list: null as { credentials: CredentialList["credentials"]; total: number } | null,
    listError: null as string | null,
    resolution: null as Resolution | null,
    resolutionError: null as string | null,
    search: null as Search | null,
    uncovered: null as Uncovered | null,
    /** Organisations whose id or name contains what was typed in the picker, when it is no organisation's exact id. */
    matches: null as { organizations: Array<{ organization_id: string; name: string }>; total: number } | null,
  };

  if (view === "uncovered") {
    try {
      const uncovered = await caller.organizations.uncovered({ provider: provider ?? undefined, limit: size, offset });
      return { ...base, mode: "uncovered" as const, uncovered };
    } catch (thrown) {
      loadFailed(thrown);
    }
  }

  if (q !== "" || view !== null) {
    try {
      const search = await caller.credentials.search({ q: q || undefined, view: view ?? undefined, provider: provider ?? undefined, limit: size, offset });
      return { ...base, mode: "search" as const, search };
    } catch (thrown) {
      const failure = describeFailure(thrown);
      if (failure.status >= 500) loadFailed(thrown);
      return { ...base, mode: "search" as const, listError: failure.message };
    }
  }

  if (organization === "") {
    let anyOrganization = true;
    try {
      anyOrganization = (await caller.organizations.list({ limit: 1 })).organizations.length > 0;
    } catch (thrown) {
      loadFailed(thrown);
    }
    return { ...base, mode: anyOrganization ? ("choose" as const) : ("no-organizations" as const) };
  }

  try {
    const [page, named] = await Promise.all([
      caller.credentials.list({
        organization_id: organization,
        provider: provider ?? undefined,
        rotation_due_only: rotationDue ? "true" : undefined,
        failing_only: failing ? "true" : undefined,
        limit: size,
        offset,
      }),
      caller.organizations.get({ organization_id: organization }).catch(() => null),
    ]);
    cookies.set(LAST_ORGANIZATION_COOKIE, organization, {
      path: "/",
      httpOnly: true,
      sameSite: "lax",
      secure: url.protocol === "https:",
      maxAge: 60 * 60 * 24 * 365,
    });
    let resolution: Resolution | null = null;
    let resolutionError: string | null = null;
    // Which key is live and why, from the service's own selection (never worked out here); the list stands without it.
    try {
      resolution = await caller.resolution.explain({ organization_id: organization, provider: provider ?? undefined });
    } catch (thrown) {
      resolutionError = describeFailure(thrown).message;
    }
    return {
      ...base,
      mode: "organization" as const,
      organizationName: named?.name ?? null,
      list: { credentials: page.credentials, total: page.total },
      resolution,
      resolutionError,
    };
  } catch (thrown) {
    const failure = describeFailure(thrown);
    if (failure.status >= 500) loadFailed(thrown);
    if (failure.code === "not_found" || failure.code === "bad_request") {
      // Forget a remembered organisation that is gone; a typed name is looked for among the organisations.
      if (typed === "") {
        cookies.delete(LAST_ORGANIZATION_COOKIE, { path: "/" });
        return { ...base, organization: "", mode: "choose" as const };
      }
      try {
        const found = await caller.organizations.list({ q: typed.slice(0, 200), limit: MATCHES_SHOWN });
        if (found.organizations.length > 0) {
          return {
            ...base,
            mode: "matches" as const,
            matches: { organizations: found.organizations.map((o) => ({ organization_id: o.organization_id, name: o.name })), total: found.total },
          };
        }
        // With no organisation at all, the page says so (and how to create one).
        if ((await caller.organizations.list({ limit: 1 })).organizations.length === 0) return { ...base, mode: "no-organizations" as const };
      } catch (inner) {
        if (describeFailure(inner).status >= 500) loadFailed(inner);
      }
      return { ...base, mode: "organization" as const, listError: `There is no organization "${typed}", and none whose name or id contains it.` };
    }
    if (typed === "") {
      cookies.delete(LAST_ORGANIZATION_COOKIE, { path: "/" });
      return { ...base, organization: "", mode: "choose" as const };
    }
    return { ...base, mode: "organization" as const, listError: failure.message };
  }
};
type Toggle = "activate" | "deactivate";

async function toggle(event: Parameters<Actions[string]>[0], to: Toggle) {
  const form = await event.request.formData();
  const back = returnTo(form, "/");
  let outcome: { ok: true; name: string; provider: string } | { ok: false; message: string };
  try {
    const credential = await callerFor(event).credentials[to]({ credential_id: field(form, "credential_id") });
    outcome = { ok: true, name: credential.credential_name, provider: credential.provider };
  } catch (thrown) {
    outcome = { ok: false, message: describeFailure(thrown).message };
  }
  if (!outcome.ok) redirectWithFlash(event, back, { kind: "error", message: `Could not ${to} the credential: ${outcome.message}` });
  redirectWithFlash(event, back, {
    kind: "success",
    message:
      to === "activate"
        ? `“${outcome.name}” is active: ${providerLabel(outcome.provider)} calls of its organization can use it.`
        : `“${outcome.name}” is inactive: it is kept, and no call uses it until you activate it again.`,
  });
}

/** The Test button: checks the stored key with its provider; the outcome comes back as the page's message. */
async function verify(event: Parameters<Actions[string]>[0]) {
  const form = await event.request.formData();
  const back = returnTo(form, "/");
  let outcome: { ok: true; result: Awaited<ReturnType<PageCaller["credentials"]["verify"]>> } | { ok: false; message: string };
  try {
    outcome = { ok: true, result: await callerFor(event).credentials.verify({ credential_id: field(form, "credential_id") }) };
  } catch (thrown) {
    outcome = { ok: false, message: describeFailure(thrown).message };
  }
  if (!outcome.ok) redirectWithFlash(event, back, { kind: "error", message: `Could not test the credential: ${outcome.message}` });
  const { check, credential } = outcome.result;
  redirectWithFlash(event, back, {
    kind: check.outcome === "valid" ? "success" : "error",
    message: `Test of “${credential.credential_name}”: ${outcomeDisplay(check.outcome).label}. ${check.message} Took ${check.latency_ms} ms.`,
  });
}

export const actions: Actions = {
  activate: (event) => toggle(event, "activate"),
  deactivate: (event) => toggle(event, "deactivate"),
  verify,
};
