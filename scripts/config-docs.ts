// `npm run docs:config`: writes the settings tables of the service and of the portal into
// docs/configuration.md, between their generated markers, from the schemas each process checks
// its environment against. It lives outside service/ and portal/ because it reads both (they
// import nothing from each other).
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { settingsTable } from "../service/src/runtime/settings.js";
import { portalSettingsTable } from "../portal/src/lib/server/settings.js";

export const CONFIGURATION_DOC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../docs/configuration.md");
const END = "<!-- end of generated -->";

/** Each generated part: the marker that opens it (naming its source) and what fills it. */
const PARTS = [
  { begin: "<!-- generated from service/src/runtime/settings.ts by `npm run docs:config`: edit there -->", table: settingsTable },
  { begin: "<!-- generated from portal/src/lib/server/settings.js by `npm run docs:config`: edit there -->", table: portalSettingsTable },
];

/** The document with its generated parts made anew from the schemas. */
export function renderConfigurationDoc(current: string): string {
  let doc = current;
  for (const { begin, table } of PARTS) {
    const start = doc.indexOf(begin);
    const end = start < 0 ? -1 : doc.indexOf(END, start);
    if (start < 0 || end < 0) throw new Error(`${CONFIGURATION_DOC} lost the generated markers "${begin}" … "${END}"`);
    doc = `${doc.slice(0, start + begin.length)}\n${table()}\n${doc.slice(end)}`;
  }
  return doc;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const current = readFileSync(CONFIGURATION_DOC, "utf8");
  const next = renderConfigurationDoc(current);
  if (next === current) console.log("docs/configuration.md is up to date");
  else {
    writeFileSync(CONFIGURATION_DOC, next);
    console.log("docs/configuration.md: settings written");
  }
}
