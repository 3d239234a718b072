// The build made only when stale (npm start, the test tiers): its stamp must never vouch for sources it did not build.
import { mkdtemp, readFile, rm, writeFile, mkdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { ensureStampedBuild, type StampedBuild } from "@provider-credentials/wire/build/stamped-build";

let root: string;
let builds: number;
const log: string[] = [];

function spec(during: () => Promise<void> = async () => undefined): StampedBuild {
  return {
    label: "thing",
    rootDir: root,
    inputs: ["src"],
    output: path.join(root, "out", "built.txt"),
    stampFile: path.join(root, "out", ".stamp"),
    lockDir: path.join(root, "out", ".lock"),
    async build() {
      builds++;
      const source = await readFile(path.join(root, "src", "a.txt"), "utf8");
      await during();
      await mkdir(path.join(root, "out"), { recursive: true });
      await writeFile(path.join(root, "out", "built.txt"), source);
    },
    messages: { force: "forced", stale: "sources changed", first: "first build" },
  };
}

beforeEach(async () => {
  root = await mkdtemp(path.join(tmpdir(), "pc-stamped-"));
  await mkdir(path.join(root, "src"));
  await writeFile(path.join(root, "src", "a.txt"), "one");
  builds = 0;
  log.length = 0;
});
afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("ensureStampedBuild", () => {
  it("builds once, then not again until a source changes", async () => {
    await ensureStampedBuild(spec(), (m) => log.push(m));
    await ensureStampedBuild(spec(), (m) => log.push(m));
    expect(builds).toBe(1);
    await writeFile(path.join(root, "src", "a.txt"), "two");
    await ensureStampedBuild(spec(), (m) => log.push(m));
    expect(builds).toBe(2);
    expect(await readFile(path.join(root, "out", "built.txt"), "utf8")).toBe("two");
    expect(log).toContain("thing: sources changed");
  });

  it("a source edited during the build leaves no stamp, so the next start builds again", async () => {
    await ensureStampedBuild(
      spec(() => writeFile(path.join(root, "src", "a.txt"), "edited meanwhile")),
      (m) => log.push(m),
    );
    expect(log).toContain("thing: sources changed during the build; it will be built again next time");
    expect(existsSync(path.join(root, "out", ".stamp"))).toBe(false);
    // What was built is the older text; the next call builds the current one.
    expect(await readFile(path.join(root, "out", "built.txt"), "utf8")).toBe("one");
    await ensureStampedBuild(spec(), (m) => log.push(m));
    expect(builds).toBe(2);
    expect(await readFile(path.join(root, "out", "built.txt"), "utf8")).toBe("edited meanwhile");
    await ensureStampedBuild(spec(), (m) => log.push(m));
    expect(builds).toBe(2);
  });
});
