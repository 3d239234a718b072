// `npm run docs:config`: writes the service's settings table into docs/configuration.md, between
// its generated markers, from the schema the service checks its environment against.
import { readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { settingsTable } from "../src/runtime/settings.js";

export const CONFIGURATION_DOC = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../docs/configuration.md");
const BEGIN = "<!-- generated from service/src/runtime/settings.ts by `npm run docs:config`: edit there -->";
const END = "<!-- end of generated -->";

/** The document with its generated part made anew from the schema. */
export function renderConfigurationDoc(current: string): string {
  const start = current.indexOf(BEGIN);
  const end = current.indexOf(END);
  if (start < 0 || end < start) throw new Error(`${CONFIGURATION_DOC} lost its generated markers`);
  return `${current.slice(0, start + BEGIN.length)}\n${settingsTable()}\n${current.slice(end)}`;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const current = readFileSync(CONFIGURATION_DOC, "utf8");
  const next = renderConfigurationDoc(current);
  if (next === current) console.log("docs/configuration.md is up to date");
  else {
    writeFileSync(CONFIGURATION_DOC, next);
    console.log("docs/configuration.md: service settings written");
  }
}
