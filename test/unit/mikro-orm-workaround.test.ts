// inTransaction (service/src/db/orm.ts) commits through MikroORM's connection without em.commit()'s flush
// and asks the unit of work what a flush would write (ADR 0005). Those calls are MikroORM's exported API but
// not the way its docs use it, so the workaround was checked against one version: a new version fails here
// until someone re-checks it (the ADR says how) and moves this pin.
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

const CHECKED = { "@mikro-orm/core": "6.6.16", "@mikro-orm/postgresql": "6.6.16", "@mikro-orm/knex": "6.6.16" };

describe("the MikroORM workaround of ADR 0005", () => {
  it.each(Object.entries(CHECKED))("was checked against the installed %s (%s)", (name, version) => {
    const manifest = JSON.parse(readFileSync(path.resolve("node_modules", name, "package.json"), "utf8")) as { version: string };
    expect(
      manifest.version,
      `${name} changed: re-check inTransaction's commit without flush (docs/adr/0005-no-async-local-storage.md), then update CHECKED`,
    ).toBe(version);
  });
});
