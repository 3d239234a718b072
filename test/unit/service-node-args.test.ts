// The node flags npm start and the benchmark run the service with.
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";
import { serviceNodeArgs } from "../../service/scripts/ensure-build.js";

describe("serviceNodeArgs", () => {
  it("gives a service with one core the single-threaded collector, and one with more cores V8's default", () => {
    expect(serviceNodeArgs(1)).toEqual(["--enable-source-maps", "--single-threaded-gc"]);
    expect(serviceNodeArgs(2)).toEqual(["--enable-source-maps"]);
    expect(serviceNodeArgs(8)).toEqual(["--enable-source-maps"]);
  });

  it("are flags this node accepts on its command line (an unknown V8 flag would stop it at start-up)", () => {
    for (const cores of [1, 2]) {
      const run = spawnSync(process.execPath, [...serviceNodeArgs(cores), "-e", "process.stdout.write(JSON.stringify(process.execArgv))"], {
        encoding: "utf8",
      });
      expect(run.stderr).toBe("");
      expect(run.status).toBe(0);
      expect(JSON.parse(run.stdout)).toEqual([...serviceNodeArgs(cores), "-e", expect.any(String)]);
    }
  });
});
