import { maskKeys } from "../errors.js";
import type { ImportReport, SkippedRow, Tally } from "./import-saas-litellm.js";

function quote(value: string | null | undefined): string {
  return value === null || value === undefined ? "(none)" : JSON.stringify(value);
}

function credentialLine(row: SkippedRow): string {
  const id = /^[0-9a-f-]{36}$/i.test(row.id) ? row.id : quote(row.id);
  return `  credential ${id} (organization ${quote(row.organizationId)}, provider ${quote(row.provider)}): ${row.reason}`;
}

/**
 * The final report, for people: counts, then every row not imported with why,
 * by id. Ids, names and reasons only: never a key or a token (and anything
 * shaped like a key is masked, as a second line of defence).
 */
export function formatReport(report: ImportReport, where: string): string {
  const imported = report.dryRun ? "would be imported" : "imported";
  const counts = (t: Tally) => `${t.imported} ${imported}, ${t.alreadyPresent} already present, ${t.skipped.length} skipped`;
  const lines = [
    `SaaS LiteLLM import from ${where}${report.dryRun ? " (dry run: nothing was written)" : ""}`,
    `  organizations: ${counts(report.organizations)}`,
    `  teams:         ${counts(report.teams)}`,
    `  credentials:   ${counts(report.credentials)}, ${report.credentials.undecryptable.length} could not be decrypted`,
  ];
  const skipped = [
    ...report.organizations.skipped.map((r) => `  organization ${quote(r.id)}: ${r.reason}`),
    ...report.teams.skipped.map((r) => `  team ${quote(r.id)} (organization ${quote(r.organizationId)}): ${r.reason}`),
    ...report.credentials.skipped.map(credentialLine),
  ];
  if (skipped.length > 0) lines.push("", `Skipped (${skipped.length}, not imported):`, ...skipped);
  if (report.credentials.undecryptable.length > 0) {
    lines.push("", `Could not decrypt (${report.credentials.undecryptable.length}, not imported):`, ...report.credentials.undecryptable.map(credentialLine));
  }
  if (report.notes.length > 0) lines.push("", "Notes:", ...report.notes.map((n) => `  ${n}`));
  lines.push("");
  const problems = skipped.length + report.credentials.undecryptable.length;
  if (problems > 0) {
    lines.push(
      `${problems} row(s) were not imported. Fix them in SaaS LiteLLM and run the import again (what is already imported is left alone), or add them in the portal.`,
    );
  } else {
    lines.push(report.dryRun ? "Every row would be imported or is already present." : "Every row is imported or was already present.");
  }
  lines.push(`Done in ${(report.ms / 1000).toFixed(1)} s.`);
  return lines.map(maskKeys).join("\n");
}
