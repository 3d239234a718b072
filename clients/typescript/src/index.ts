// @provider-credentials/client: ResolveKey with the answers kept in memory, dropped as soon as the
// service's change stream (CredentialService.WatchResolutions) says they may have changed.
// See clients/typescript/README.md.
import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  CredentialService,
  FailureKind,
  KeySource,
  Provider,
  type ResolutionChange,
  type WatchResolutionsResponse,
} from "@provider-credentials/wire/gen/credentials_pb";
import { resolverError, UnavailableError, type KeyResolverError } from "./errors.js";

export * from "./errors.js";
export { Provider, FailureKind };

/** Whose key: an organisation, or a team (the service maps it to its organisation). */
export type Scope = { organizationId: string } | { teamId: string };

/** A provider by name (`"openai"`, `"anthropic"`, `"gemini"`, `"fireworks"`) or as the proto enum. */
export type ProviderRef = string | Provider;

/** What a failed call with a key was: only authentication, permission and quota failures count towards marking it failing. */
export type FailureKindName = "authentication" | "permission" | "rate_limit" | "quota" | "other";

/** One resolution. Treat `apiKey` as a secret: never log it. */
export interface Resolution {
  readonly apiKey: string;
  /** The credential's API base; undefined: the provider's default. */
  readonly apiBase: string | undefined;
  /** The credential handed out; undefined when the key is the service's environment fallback. */
  readonly credentialId: string | undefined;
  readonly source: "organization" | "environment";
  /** The credential is marked failing (handed out only because no healthy one exists). */
  readonly failing: boolean;
  /** The organisation the scope resolved to. */
  readonly organizationId: string;
}

export interface TlsOptions {
  /** PEM of the CA that signed the service's certificate (default: Node.js's trusted CAs). */
  ca?: string | Buffer;
  /** Mutual TLS: this client's PEM certificate and key. */
  cert?: string | Buffer;
  key?: string | Buffer;
  /** The name to check the service's certificate against, when it is not the URL's host. */
  serverName?: string;
}

export interface KeyResolverOptions {
  /** The service's gRPC address: `http://host:50051` (cleartext HTTP/2) or `https://host:50051` (TLS). Either port of the service works. */
  url: string;
  /** A `resolve` (or `admin`) token. */
  token: string;
  /** TLS settings for an `https://` URL. */
  tls?: TlsOptions;
  cache?: {
    /** Most answers kept (default 10,000); 0: no cache, every call asks the service. */
    maxEntries?: number;
    /**
     * While the change stream is down (the client may miss changes), how long after it broke
     * cached answers are still served (ms, default 5000); then every call asks the service until
     * the stream is back. 0: never serve a cached answer without a live stream.
     */
    maxStalenessMs?: number;
  };
  /** Deadline of each call to the service (ms, default 5000). */
  timeoutMs?: number;
  /** Reconnection back-off of the change stream (ms): first delay, doubling up to max, with jitter. */
  reconnect?: { initialDelayMs?: number; maxDelayMs?: number };
  /** A stream that hears nothing (not even a heartbeat) for this long is taken as broken (ms, default 10,000). */
  streamIdleTimeoutMs?: number;
}

export interface KeyResolver {
  /** The key for the scope and provider: from memory when the change stream is live (or broke less than maxStalenessMs ago), else from the service. */
  resolve(scope: Scope, provider: ProviderRef): Promise<Resolution>;
  /** A call with the credential failed; the service marks it failing after enough authentication or quota failures. */
  reportFailure(credentialId: string, kind: FailureKindName | FailureKind): Promise<{ failureStreak: number; failing: boolean }>;
  /** Calls with these credentials succeeded (their failure streaks reset). */
  reportSuccess(credentialIds: readonly string[]): Promise<{ recovered: number }>;
  /** Resolves once the change stream is live (the cache is in use), or rejects after `timeoutMs`. */
  ready(timeoutMs?: number): Promise<void>;
  /** What the cache did so far, and the stream's state. */
  stats(): ResolverStats;
  /** Ends the change stream and forgets every answer. */
  close(): void;
}

export interface ResolverStats {
  hits: number;
  misses: number;
  entries: number;
  /** The change stream is live: answers are served from memory. */
  live: boolean;
  /** Changes heard on the stream. */
  changes: number;
  /** Times the stream (re)connected. */
  connects: number;
}

const FAILURE_KINDS: Record<FailureKindName, FailureKind> = {
  authentication: FailureKind.AUTHENTICATION,
  permission: FailureKind.PERMISSION,
  rate_limit: FailureKind.RATE_LIMIT,
  quota: FailureKind.QUOTA,
  other: FailureKind.OTHER,
};

/** Names as callers write them, looked up without building a string per call. */
const PROVIDER_NAMES = new Map<string, Provider>(
  Object.entries(Provider)
    .filter((entry): entry is [string, Provider] => typeof entry[1] === "number" && entry[1] !== Provider.UNSPECIFIED)
    .map(([name, value]) => [name.toLowerCase(), value]),
);

function providerOf(ref: ProviderRef): Provider {
  if (typeof ref === "number") return ref;
  const known = PROVIDER_NAMES.get(ref);
  if (known !== undefined) return known;
  const value = (Provider as unknown as Record<string, Provider | undefined>)[ref.toUpperCase()];
  if (typeof value !== "number" || value === Provider.UNSPECIFIED) {
    throw resolverError(new ConnectError(`provider: unknown provider "${ref}"`, Code.InvalidArgument));
  }
  return value;
}

interface Entry {
  readonly answer: Resolution;
  readonly organizationId: string;
  readonly teamId: string | undefined;
  readonly provider: Provider;
  /** Used since the eviction hand last passed (second-chance eviction: a hit only sets this). */
  used: boolean;
}

/** Answers by scope and provider, indexed by organisation and team for dropping. */
class AnswerCache {
  /** Every entry by its key: the eviction order, and what dropping walks. */
  private readonly entries = new Map<string, Entry>();
  /** The same entries for a hit without building a key: by organisation (or team), then by provider. */
  private readonly organizationAnswers = new Map<string, Array<Entry | undefined>>();
  private readonly teamAnswers = new Map<string, Array<Entry | undefined>>();
  private readonly byOrganization = new Map<string, Set<string>>();
  private readonly byTeam = new Map<string, Set<string>>();

  constructor(private readonly maxEntries: number) {}

  get size(): number {
    return this.entries.size;
  }

  /** A hit: two map look-ups, no allocation. */
  find(scope: Scope, provider: Provider): Entry | undefined {
    const teamId = (scope as { teamId?: string }).teamId;
    const byProvider = teamId === undefined ? this.organizationAnswers.get((scope as { organizationId: string }).organizationId) : this.teamAnswers.get(teamId);
    const entry = byProvider?.[provider];
    if (entry !== undefined) entry.used = true;
    return entry;
  }

  set(key: string, entry: Entry): void {
    if (this.maxEntries <= 0) return;
    this.delete(key);
    while (this.entries.size >= this.maxEntries) this.evictOne();
    this.entries.set(key, entry);
    const answers = entry.teamId === undefined ? this.organizationAnswers : this.teamAnswers;
    const id = entry.teamId ?? entry.organizationId;
    let byProvider = answers.get(id);
    if (byProvider === undefined) answers.set(id, (byProvider = []));
    byProvider[entry.provider] = entry;
    index(this.byOrganization, entry.organizationId, key);
    if (entry.teamId !== undefined) index(this.byTeam, entry.teamId, key);
  }

  private evictOne(): void {
    for (const [key, entry] of this.entries) {
      if (entry.used) {
        // Second chance: to the back of the line.
        entry.used = false;
        this.entries.delete(key);
        this.entries.set(key, entry);
        continue;
      }
      this.delete(key);
      return;
    }
  }

  delete(key: string): void {
    const entry = this.entries.get(key);
    if (entry === undefined) return;
    this.entries.delete(key);
    const answers = entry.teamId === undefined ? this.organizationAnswers : this.teamAnswers;
    const id = entry.teamId ?? entry.organizationId;
    const byProvider = answers.get(id);
    if (byProvider !== undefined && byProvider[entry.provider] === entry) {
      byProvider[entry.provider] = undefined;
      if (byProvider.every((e) => e === undefined)) answers.delete(id);
    }
    unindex(this.byOrganization, entry.organizationId, key);
    if (entry.teamId !== undefined) unindex(this.byTeam, entry.teamId, key);
  }

  dropOrganization(organizationId: string, provider: Provider | undefined): void {
    const keys = this.byOrganization.get(organizationId);
    if (keys === undefined) return;
    for (const key of [...keys]) {
      if (provider === undefined || this.entries.get(key)?.provider === provider) this.delete(key);
    }
  }

  dropTeam(teamId: string): void {
    const keys = this.byTeam.get(teamId);
    if (keys !== undefined) for (const key of [...keys]) this.delete(key);
  }

  clear(): void {
    this.entries.clear();
    this.organizationAnswers.clear();
    this.teamAnswers.clear();
    this.byOrganization.clear();
    this.byTeam.clear();
  }
}

function index(map: Map<string, Set<string>>, id: string, key: string): void {
  let keys = map.get(id);
  if (keys === undefined) map.set(id, (keys = new Set()));
  keys.add(key);
}

function unindex(map: Map<string, Set<string>>, id: string, key: string): void {
  const keys = map.get(id);
  if (keys === undefined) return;
  keys.delete(key);
  if (keys.size === 0) map.delete(id);
}

function cacheKey(scope: Scope, provider: Provider): string {
  return "teamId" in scope ? `t\u0000${scope.teamId}\u0000${provider}` : `o\u0000${scope.organizationId}\u0000${provider}`;
}

/** Why a stream ended that means the token no longer works: answers are dropped at once, not served stale. */
const CREDENTIAL_CODES = new Set([Code.Unauthenticated, Code.PermissionDenied]);

class Resolver implements KeyResolver {
  private readonly client: Client<typeof CredentialService>;
  private readonly cache: AnswerCache;
  private readonly maxStalenessMs: number;
  private readonly timeoutMs: number;
  private readonly initialDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly idleTimeoutMs: number;
  /** Bumped by every change heard and every reconnection: an answer fetched across one is not kept. */
  private generation = 0;
  private live = false;
  /** When the stream last broke (after having been live), for the staleness limit. */
  private brokeAt: number | undefined;
  private resumeToken = "";
  private closed = false;
  private stream: AbortController | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private delayMs: number;
  private readonly liveWaiters = new Set<() => void>();
  private readonly counts = { hits: 0, misses: 0, changes: 0, connects: 0 };

  constructor(options: KeyResolverOptions) {
    const url = new URL(options.url);
    if (url.protocol !== "http:" && url.protocol !== "https:") throw new TypeError(`url: must start with http:// or https://, not ${url.protocol}`);
    if (options.tls && url.protocol !== "https:") throw new TypeError("tls: needs an https:// url");
    if (!options.token) throw new TypeError("token: is required");
    this.maxStalenessMs = options.cache?.maxStalenessMs ?? 5_000;
    this.cache = new AnswerCache(options.cache?.maxEntries ?? 10_000);
    this.timeoutMs = options.timeoutMs ?? 5_000;
    this.initialDelayMs = options.reconnect?.initialDelayMs ?? 100;
    this.maxDelayMs = options.reconnect?.maxDelayMs ?? 5_000;
    this.idleTimeoutMs = options.streamIdleTimeoutMs ?? 10_000;
    this.delayMs = this.initialDelayMs;
    const authorization = `Bearer ${options.token}`;
    const auth: Interceptor = (next) => (req) => {
      req.header.set("authorization", authorization);
      return next(req);
    };
    const tls = options.tls;
    const transport = createGrpcTransport({
      baseUrl: url.origin,
      interceptors: [auth],
      // A connection that stopped answering is noticed by HTTP/2 pings, not only by the stream's silence.
      pingIntervalMs: 5_000,
      pingTimeoutMs: 5_000,
      nodeOptions: tls ? { ca: tls.ca, cert: tls.cert, key: tls.key, servername: tls.serverName } : undefined,
    });
    this.client = createClient(CredentialService, transport);
    // Without a cache there is nothing for the stream to keep right.
    if ((options.cache?.maxEntries ?? 10_000) > 0) void this.connect();
  }

  /** Whether cached answers may be served now. */
  private serving(): boolean {
    if (this.live) return true;
    return this.brokeAt !== undefined && Date.now() - this.brokeAt < this.maxStalenessMs;
  }

  resolve(scope: Scope, provider: ProviderRef): Promise<Resolution> {
    let p: Provider;
    try {
      p = providerOf(provider);
    } catch (error) {
      return Promise.reject(error as KeyResolverError);
    }
    if (this.serving()) {
      const entry = this.cache.find(scope, p);
      if (entry !== undefined) {
        this.counts.hits++;
        return Promise.resolve(entry.answer);
      }
    }
    this.counts.misses++;
    return this.fetch(scope, p, cacheKey(scope, p));
  }

  private async fetch(scope: Scope, provider: Provider, key: string): Promise<Resolution> {
    if (this.closed) throw new UnavailableError("the resolver is closed", Code.Canceled);
    const generation = this.generation;
    const wasLive = this.live;
    let response;
    try {
      response = await this.client.resolveKey(
        {
          scope: "teamId" in scope ? { case: "teamId", value: scope.teamId } : { case: "organizationId", value: scope.organizationId },
          provider,
        },
        { timeoutMs: this.timeoutMs },
      );
    } catch (error) {
      throw resolverError(error);
    }
    const answer: Resolution = Object.freeze({
      apiKey: response.apiKey,
      apiBase: response.apiBase,
      credentialId: response.credentialId,
      source: response.source === KeySource.ENVIRONMENT ? "environment" : "organization",
      failing: response.failing,
      organizationId: response.organizationId,
    });
    // Kept only if the stream was live throughout and nothing changed meanwhile.
    if (wasLive && this.live && generation === this.generation) {
      this.cache.set(key, {
        answer,
        organizationId: response.organizationId,
        teamId: "teamId" in scope ? scope.teamId : undefined,
        provider,
        used: false,
      });
    }
    return answer;
  }

  async reportFailure(credentialId: string, kind: FailureKindName | FailureKind): Promise<{ failureStreak: number; failing: boolean }> {
    const value = typeof kind === "number" ? kind : FAILURE_KINDS[kind];
    if (value === undefined) throw resolverError(new ConnectError(`kind: must be one of ${Object.keys(FAILURE_KINDS).join(", ")}`, Code.InvalidArgument));
    try {
      const r = await this.client.reportKeyFailure({ credentialId, kind: value }, { timeoutMs: this.timeoutMs });
      return { failureStreak: r.failureStreak, failing: r.failing };
    } catch (error) {
      throw resolverError(error);
    }
  }

  async reportSuccess(credentialIds: readonly string[]): Promise<{ recovered: number }> {
    try {
      const r = await this.client.reportKeySuccess({ credentialIds: [...credentialIds] }, { timeoutMs: this.timeoutMs });
      return { recovered: r.recovered };
    } catch (error) {
      throw resolverError(error);
    }
  }

  ready(timeoutMs = 10_000): Promise<void> {
    if (this.live) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        clearTimeout(timer);
        this.liveWaiters.delete(done);
        resolve();
      };
      const timer = setTimeout(() => {
        this.liveWaiters.delete(done);
        reject(new UnavailableError(`the change stream did not become live within ${timeoutMs} ms`, Code.DeadlineExceeded));
      }, timeoutMs);
      this.liveWaiters.add(done);
    });
  }

  stats(): ResolverStats {
    return { ...this.counts, entries: this.cache.size, live: this.live };
  }

  close(): void {
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.idleTimer);
    this.stream?.abort();
    this.live = false;
    this.brokeAt = undefined;
    this.cache.clear();
  }

  // -- the change stream ------------------------------------------------------

  private async connect(): Promise<void> {
    if (this.closed) return;
    const abort = new AbortController();
    this.stream = abort;
    let failure: unknown;
    this.armIdle(abort);
    try {
      for await (const message of this.client.watchResolutions({ resumeToken: this.resumeToken }, { signal: abort.signal })) {
        this.armIdle(abort);
        this.onMessage(message);
      }
      failure = new ConnectError("the change stream ended", Code.Unavailable);
    } catch (error) {
      failure = error;
    } finally {
      clearTimeout(this.idleTimer);
    }
    this.onBroken(failure);
  }

  private armIdle(abort: AbortController): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => abort.abort(new ConnectError("the change stream went silent", Code.Unavailable)), this.idleTimeoutMs);
    this.idleTimer.unref();
  }

  private onMessage(message: WatchResolutionsResponse): void {
    if (message.resumeToken !== "") this.resumeToken = message.resumeToken;
    const event = message.event;
    if (event.case === "change") {
      this.counts.changes++;
      this.apply(event.value);
    } else if (event.case === "snapshot") {
      this.generation++;
      // Not resumed: whatever happened since the stream broke is unknown.
      if (!event.value.resumed) this.cache.clear();
      this.live = true;
      this.brokeAt = undefined;
      this.delayMs = this.initialDelayMs;
      this.counts.connects++;
      for (const wake of [...this.liveWaiters]) wake();
    }
  }

  private apply(change: ResolutionChange): void {
    this.generation++;
    if (change.all) this.cache.clear();
    else if (change.teamId !== undefined) this.cache.dropTeam(change.teamId);
    else if (change.organizationId !== "") this.cache.dropOrganization(change.organizationId, change.provider);
    else this.cache.clear(); // a change this client cannot place: drop everything rather than miss it
  }

  private onBroken(error: unknown): void {
    if (this.live) this.brokeAt = Date.now();
    this.live = false;
    this.generation++;
    if (this.closed) return;
    const code = ConnectError.from(error).code;
    // The token no longer works: nothing cached may be served for it.
    if (CREDENTIAL_CODES.has(code)) {
      this.cache.clear();
      this.brokeAt = undefined;
    }
    if (this.maxStalenessMs === 0) this.cache.clear();
    const jittered = this.delayMs / 2 + Math.random() * (this.delayMs / 2);
    this.delayMs = Math.min(this.delayMs * 2, this.maxDelayMs);
    this.retryTimer = setTimeout(() => void this.connect(), jittered);
    this.retryTimer.unref();
  }
}

/** A resolver for one service: it opens the change stream at once (see KeyResolver.ready). Call close() when done. */
export function createKeyResolver(options: KeyResolverOptions): KeyResolver {
  return new Resolver(options);
}
