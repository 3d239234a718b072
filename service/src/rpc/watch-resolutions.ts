// CredentialService.WatchResolutions: the change stream for callers that cache ResolveKey's
// answers (clients/typescript, clients/python). Fed by the same LISTEN/NOTIFY invalidations that
// keep this replica's own cache right (credentials/invalidation.ts), after the cache applied them,
// so a caller that asks again after an event gets the new answer.
//
// Never a silent miss: while this replica's invalidation connection is down (it may miss
// changes) every stream is ended with UNAVAILABLE and new ones are refused, and when it is back
// an "all" change is recorded, so that a caller resuming from before the drop drops everything.
import { randomBytes } from "node:crypto";
import { timestampFromDate, timestampNow } from "@bufbuild/protobuf/wkt";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import {
  ChangeReason,
  type ResolutionChangeSchema,
  type WatchResolutionsRequest,
  type WatchResolutionsResponseSchema,
} from "@provider-credentials/wire/gen/credentials_pb";
import { AUTHORIZATION_HEADER, bearerToken } from "@provider-credentials/wire/auth";
import type { ChangeReasonName, Invalidation, InvalidationObserver } from "../credentials/invalidation.js";
import type { TokenStore } from "../auth/token-store.js";
import type { OrganizationLimit } from "../auth/tokens.js";
import { invalid } from "../errors.js";
import { validateId } from "../credentials/validation.js";
import { outside } from "../auth/policy.js";
import { principalOf } from "./context.js";
import { providerEnum } from "./convert.js";

/** WATCH_HEARTBEAT_MS: a heartbeat on a stream that sent nothing for this long. */
export const DEFAULT_WATCH_HEARTBEAT_MS = 2_000;
/** WATCH_MAX_STREAMS: open WatchResolutions streams, both ports together. */
export const DEFAULT_WATCH_MAX_STREAMS = 1_000;
/** Recent changes kept per replica for resuming streams. */
export const WATCH_REPLAY_EVENTS = 4_096;
/** Changes queued for one slow stream before they collapse into one "drop everything" change. */
const MAX_QUEUED = 10_000;
/** How often a live stream checks that its token still works (and whether a heartbeat is due), at most. */
const TOKEN_RECHECK_MS = 1_000;
const MAX_RESUME_TOKEN_LENGTH = 64;
const MAX_ORGANIZATION_FILTER = 1_000;

type Response = MessageInitShape<typeof WatchResolutionsResponseSchema>;
type Change = MessageInitShape<typeof ResolutionChangeSchema>;

interface FeedEvent {
  seq: number;
  change: Invalidation;
  at: Date;
}

const REASON: Record<ChangeReasonName, ChangeReason> = {
  credential: ChangeReason.CREDENTIAL,
  selection_strategy: ChangeReason.SELECTION_STRATEGY,
  key_health: ChangeReason.KEY_HEALTH,
  organization: ChangeReason.ORGANIZATION,
  team: ChangeReason.TEAM,
  all: ChangeReason.ALL,
};

/** One open stream's queue of changes. */
class Watcher {
  readonly queue: FeedEvent[] = [];
  ended: ConnectError | undefined;
  private wake: (() => void) | undefined;

  push(event: FeedEvent): void {
    if (this.queue.length >= MAX_QUEUED) {
      // The caller does not keep up: everything it was to hear becomes one "drop everything".
      this.queue.length = 0;
      this.queue.push({ seq: event.seq, change: { all: true, reason: "all" }, at: event.at });
    } else {
      this.queue.push(event);
    }
    this.wake?.();
  }

  end(error: ConnectError): void {
    this.ended ??= error;
    this.wake?.();
  }

  /** Until a change is queued, the stream is ended, the signal aborts, or `ms` pass. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    if (this.queue.length > 0 || this.ended || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
      this.wake = done;
    });
  }
}

/**
 * This replica's change stream: numbers every change it hears (from any replica, through the
 * invalidation listener), keeps the last WATCH_REPLAY_EVENTS for resuming, and hands them to the
 * open streams. A resume token is `<boot>.<seq>`: the boot is random per process, so a token
 * of another replica (or of this one before a restart) never resumes.
 */
export class ChangeFeed implements InvalidationObserver {
  readonly boot = randomBytes(9).toString("base64url");
  private seq = 0;
  private readonly ring: FeedEvent[] = [];
  private readonly watchers = new Set<Watcher>();
  private listening = false;
  private closed = false;

  constructor(
    /** Open streams, both ports together (WATCH_MAX_STREAMS). */
    public maxStreams = DEFAULT_WATCH_MAX_STREAMS,
    /** WATCH_HEARTBEAT_MS. */
    public heartbeatMs = DEFAULT_WATCH_HEARTBEAT_MS,
    private readonly replayEvents = WATCH_REPLAY_EVENTS,
  ) {}

  /** Streams open now. */
  get streamCount(): number {
    return this.watchers.size;
  }

  /** The last change's number. */
  get position(): number {
    return this.seq;
  }

  token(seq: number): string {
    return `${this.boot}.${seq}`;
  }

  change(change: Invalidation): void {
    this.publish(change);
  }

  down(): void {
    this.listening = false;
    this.endAll(
      new ConnectError(
        "this replica lost its change notifications and may miss changes: drop cached answers (or serve them only within your staleness limit) and watch again",
        Code.Unavailable,
      ),
    );
  }

  up(first: boolean): void {
    this.listening = true;
    // What happened while the connection was down is unknown: a caller resuming from before the drop must drop everything.
    if (!first) this.publish({ all: true, reason: "all" });
  }

  /** Shutdown: every stream ends now (so that none holds the drain), and none is admitted. */
  shutDown(): void {
    this.closed = true;
    this.endAll(new ConnectError("the service is shutting down; watch again (another replica)", Code.Unavailable));
  }

  private endAll(error: ConnectError): void {
    for (const watcher of this.watchers) watcher.end(error);
  }

  private publish(change: Invalidation): void {
    const event: FeedEvent = { seq: ++this.seq, change, at: new Date() };
    this.ring.push(event);
    if (this.ring.length > this.replayEvents) this.ring.shift();
    for (const watcher of this.watchers) watcher.push(event);
  }

  /**
   * Admits one stream: its watcher, the changes to replay (those after the resume token, when
   * every one is still kept), and whether the token was honoured. Throws UNAVAILABLE while this
   * replica cannot hear changes or is shutting down, RESOURCE_EXHAUSTED past maxStreams.
   */
  open(resumeToken: string): { watcher: Watcher; replay: FeedEvent[]; resumed: boolean } {
    if (this.closed) throw new ConnectError("the service is shutting down; watch again (another replica)", Code.Unavailable);
    if (!this.listening) {
      throw new ConnectError("this replica cannot hear changes right now (its database notification connection is down); try again shortly", Code.Unavailable);
    }
    if (this.watchers.size >= this.maxStreams) {
      throw new ConnectError(
        `too many change streams: ${this.maxStreams} WatchResolutions streams are open (WATCH_MAX_STREAMS); watch again later`,
        Code.ResourceExhausted,
      );
    }
    let replay: FeedEvent[] = [];
    let resumed = false;
    const match = /^([A-Za-z0-9_-]{12})\.(\d{1,15})$/.exec(resumeToken);
    if (match && match[1] === this.boot) {
      const after = Number(match[2]);
      const oldest = this.ring.length > 0 ? this.ring[0].seq : this.seq + 1;
      if (after <= this.seq && after >= oldest - 1) {
        replay = this.ring.filter((e) => e.seq > after);
        resumed = true;
      }
    }
    const watcher = new Watcher();
    this.watchers.add(watcher);
    return { watcher, replay, resumed };
  }

  release(watcher: Watcher): void {
    this.watchers.delete(watcher);
  }
}

/** What a caller may hear: null for every organisation, else these. */
type Audience = ReadonlySet<string> | null;

/** The change as this caller may hear it, or undefined when it is none of theirs. */
function changeFor(event: FeedEvent, audience: Audience): Change | undefined {
  const { change } = event;
  const reason = change.reason === undefined ? ChangeReason.UNSPECIFIED : REASON[change.reason];
  const changedAt = timestampFromDate(event.at);
  if ("all" in change) return { reason, all: true, changedAt };
  if ("teamId" in change) {
    const organizationId = change.organizationId;
    if (audience === null) return { reason, teamId: change.teamId, organizationId: organizationId ?? "", changedAt };
    // A notification of an older replica does not say whose team it was: a limited caller drops everything rather than miss it.
    if (organizationId === undefined) return { reason, all: true, changedAt };
    return audience.has(organizationId) ? { reason, teamId: change.teamId, organizationId, changedAt } : undefined;
  }
  if (audience !== null && !audience.has(change.organizationId)) return undefined;
  return {
    reason,
    organizationId: change.organizationId,
    provider: change.provider === undefined ? undefined : providerEnum(change.provider),
    changedAt,
  };
}

/** Who may hear what: the organisations asked for (each must be the caller's), else the caller's own. */
function audienceOf(req: WatchResolutionsRequest, limit: OrganizationLimit): Audience {
  if (req.organizationIds.length > MAX_ORGANIZATION_FILTER) {
    throw invalid("organization_ids", `must name at most ${MAX_ORGANIZATION_FILTER} organizations`);
  }
  if (req.organizationIds.length === 0) return limit;
  const asked = new Set<string>();
  req.organizationIds.forEach((id, i) => {
    const organizationId = validateId(`organization_ids[${i}]`, id);
    if (limit !== null && !limit.has(organizationId)) throw outside("organization_ids", "organization", organizationId);
    asked.add(organizationId);
  });
  return asked;
}

/**
 * The handler: checks the request and admits the stream at once (so that refusals are plain
 * errors, mapped like any other), then streams.
 */
export function watchResolutions(feed: ChangeFeed, tokens: TokenStore | undefined, req: WatchResolutionsRequest, ctx: HandlerContext): AsyncIterable<Response> {
  if (req.resumeToken.length > MAX_RESUME_TOKEN_LENGTH) {
    throw invalid("resume_token", "is not a token this service sent (send the resume_token of the last response, or nothing)");
  }
  const audience = audienceOf(req, principalOf(ctx.values).organizations);
  const secret = bearerToken(ctx.requestHeader.get(AUTHORIZATION_HEADER));
  const { signal } = ctx;
  const admitted = feed.open(req.resumeToken);
  // A stream cancelled before its first message never runs the generator's finally.
  signal.addEventListener("abort", () => feed.release(admitted.watcher), { once: true });
  return stream(feed, admitted, audience, signal, async () => {
    if (tokens === undefined || secret === undefined) return;
    let grant;
    try {
      grant = tokens.cached(secret) ?? (await tokens.authenticate(secret));
    } catch {
      return; // the database cannot say now: the stream goes on (the token was good when it opened)
    }
    if (grant === undefined) throw new ConnectError("invalid or revoked token", Code.Unauthenticated);
  });
}

async function* stream(
  feed: ChangeFeed,
  { watcher, replay, resumed }: ReturnType<ChangeFeed["open"]>,
  audience: Audience,
  signal: AbortSignal,
  recheckToken: () => Promise<void>,
): AsyncGenerator<Response> {
  try {
    let position = feed.position;
    for (const event of replay) {
      const change = changeFor(event, audience);
      if (change) yield { event: { case: "change", value: change }, resumeToken: feed.token(event.seq) };
    }
    yield { event: { case: "snapshot", value: { resumed } }, resumeToken: feed.token(position) };
    let lastSent = Date.now();
    let lastCheck = lastSent;
    for (;;) {
      if (signal.aborted) return;
      if (watcher.ended) throw watcher.ended;
      const event = watcher.queue.shift();
      if (event) {
        position = event.seq;
        const change = changeFor(event, audience);
        if (change) {
          yield { event: { case: "change", value: change }, resumeToken: feed.token(position) };
          lastSent = Date.now();
        }
        continue;
      }
      const now = Date.now();
      if (now - lastCheck >= TOKEN_RECHECK_MS) {
        lastCheck = now;
        await recheckToken();
        continue;
      }
      if (now - lastSent >= feed.heartbeatMs) {
        yield { event: { case: "heartbeat", value: { sentAt: timestampNow() } }, resumeToken: feed.token(position) };
        lastSent = Date.now();
        continue;
      }
      await watcher.wait(Math.max(1, Math.min(lastSent + feed.heartbeatMs, lastCheck + TOKEN_RECHECK_MS) - now), signal);
    }
  } finally {
    feed.release(watcher);
  }
}
