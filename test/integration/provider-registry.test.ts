import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, type TestDatabase } from "../support/harness.js";
import { createOrm, migrate } from "../../service/src/db/orm.js";
import { Provider } from "@provider-credentials/wire/gen/credentials_pb";
import { PROVIDER_NAMES, PROVIDERS } from "@provider-credentials/wire/providers";
import { PROVIDER_NAMES as PORTAL_NAMES, PROVIDERS as PORTAL_DISPLAY } from "../../portal/src/lib/providers.js";
import { PROVIDERS as REST_PROVIDERS } from "../../portal/src/lib/server/trpc/schemas.js";

// Adding a provider means the registry (@provider-credentials/wire/providers), the proto enum and a
// migration; this fails when any of them names a provider the others do not.

let db: TestDatabase;
beforeAll(async () => {
  db = await createTestDatabase();
  const orm = await createOrm({ databaseUrl: db.url, poolSize: 1 });
  await migrate(orm, db.url);
  await orm.close(true);
});
afterAll(async () => {
  await db?.drop();
});

describe("the provider registry agrees with", () => {
  it("the proto enum Provider: one registry entry per value but PROVIDER_UNSPECIFIED, and no other", () => {
    const enumNames = Object.keys(Provider).filter((k) => Number.isNaN(Number(k)) && k !== "UNSPECIFIED");
    expect([...enumNames].sort()).toEqual(PROVIDER_NAMES.map((name) => PROVIDERS[name].enumName).sort());
  });

  it("every check constraint of the migrated database that lists providers", async () => {
    const rows = await db.query<{ table: string; definition: string }>(
      "select conrelid::regclass::text as table, pg_get_constraintdef(oid) as definition from pg_constraint where contype = 'c' and pg_get_constraintdef(oid) like '%provider%'",
    );
    expect(rows.length).toBeGreaterThanOrEqual(2);
    for (const row of rows) {
      const listed = [...row.definition.matchAll(/'([a-z_]+)'::text/g)].map((m) => m[1]);
      expect([...listed].sort(), `${row.table}: ${row.definition}`).toEqual([...PROVIDER_NAMES].sort());
    }
  });

  it("what the portal shows and what its REST API accepts", () => {
    expect(PORTAL_NAMES).toEqual(PROVIDER_NAMES);
    expect([...REST_PROVIDERS]).toEqual(PROVIDER_NAMES);
    for (const name of PROVIDER_NAMES) expect(PORTAL_DISPLAY[name]).toEqual({ label: PROVIDERS[name].label, keyFormat: `${PROVIDERS[name].keyPrefix}...` });
  });
});
