import { readdir } from "node:fs/promises";
import { describe, expect, it } from "vitest";
import { migrationsList } from "../../migrations/index.js";

// A migration file that is not in migrations/index.ts is never applied, and nothing else says so.
describe("migrations/index.ts", () => {
  it("lists every migration file in migrations/, once, in the order of their timestamps, each under its class's name", async () => {
    const files = (await readdir("migrations")).filter((f) => /^Migration\d{14}_\w+\.ts$/.test(f)).map((f) => f.replace(/\.ts$/, ""));
    expect(files.length).toBeGreaterThan(0);
    expect(migrationsList.map((m) => m.name)).toEqual([...files].sort());
    for (const m of migrationsList) expect(m.class.name).toBe(m.name);
  });
});
