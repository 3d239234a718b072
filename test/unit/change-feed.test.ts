// WatchResolutions' change feed (service/src/rpc/watch-resolutions.ts) on its own: resume tokens,
// the bounded replay ring, admission, and what happens to a reader that does not keep up.
import { describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { ChangeFeed } from "../../service/src/rpc/watch-resolutions.js";

function liveFeed(replayEvents = 4): ChangeFeed {
  const feed = new ChangeFeed(10, 2_000, replayEvents);
  feed.up(true);
  return feed;
}

const change = (organizationId: string) => ({ organizationId, reason: "credential" as const });

describe("ChangeFeed", () => {
  it("replays what a token missed while the ring still holds it, else refuses to resume", () => {
    const feed = liveFeed(4);
    const start = feed.token(feed.position);
    feed.change(change("a"));
    feed.change(change("b"));
    const resumed = feed.open(start);
    expect(resumed.resumed).toBe(true);
    expect(resumed.replay.map((e) => e.change)).toEqual([change("a"), change("b")]);
    feed.release(resumed.watcher);

    for (const id of ["c", "d", "e"]) feed.change(change(id));
    // Five changes since `start`, four kept: the token cannot be honoured.
    const tooOld = feed.open(start);
    expect(tooOld).toMatchObject({ resumed: false, replay: [] });
    feed.release(tooOld.watcher);

    const current = feed.open(feed.token(feed.position));
    expect(current).toMatchObject({ resumed: true, replay: [] });
    feed.release(current.watcher);
  });

  it("never resumes a token of another boot, from the future, or malformed", () => {
    const feed = liveFeed();
    feed.change(change("a"));
    const other = liveFeed();
    for (const token of [other.token(1), feed.token(2), `${feed.boot}.x`, "", "garbage"]) {
      const opened = feed.open(token);
      expect(opened.resumed, token).toBe(false);
      feed.release(opened.watcher);
    }
  });

  it("records a drop-everything change when the listener comes back, so a resume from before the drop sees it", () => {
    const feed = liveFeed();
    const before = feed.token(feed.position);
    const open = feed.open("");
    feed.down();
    expect(open.watcher.ended?.code).toBe(Code.Unavailable);
    expect(() => feed.open(before)).toThrow(ConnectError);
    feed.up(false);
    const resumed = feed.open(before);
    expect(resumed.resumed).toBe(true);
    expect(resumed.replay.map((e) => e.change)).toEqual([{ all: true, reason: "all" }]);
  });

  it("bounds the streams, and admits none after shutdown", () => {
    const feed = liveFeed();
    feed.maxStreams = 1;
    const first = feed.open("");
    expect(() => feed.open("")).toThrow(/WATCH_MAX_STREAMS/);
    feed.release(first.watcher);
    const again = feed.open("");
    feed.shutDown();
    expect(again.watcher.ended?.code).toBe(Code.Unavailable);
    expect(() => feed.open("")).toThrow(/shutting down/);
  });

  it("collapses the queue of a reader that does not keep up into one drop-everything change", () => {
    const feed = liveFeed();
    const { watcher } = feed.open("");
    for (let i = 0; i < 10_001; i++) feed.change(change(`o${i}`));
    expect(watcher.queue).toHaveLength(1);
    expect(watcher.queue[0].change).toEqual({ all: true, reason: "all" });
    expect(watcher.queue[0].seq).toBe(feed.position);
  });
});
