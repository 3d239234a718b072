// deploy/prometheus/alerts.yaml, the example alert rules of the production checklist, checked
// against the service's metrics: every metric an expression names is one the service exports
// (service/src/metrics.ts, read from a real ServiceMetrics registry, default process metrics
// included), and every label it matches or groups by is one that metric carries.
import { readFileSync } from "node:fs";
import { parse } from "yaml";
import { describe, expect, it } from "vitest";
import { ServiceMetrics } from "../../service/src/metrics.js";

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const file = parse(readFileSync("deploy/prometheus/alerts.yaml", "utf8")) as { groups: Array<{ name: string; rules: Rule[] }> };
const rules = file.groups.flatMap((g) => g.rules);

/** Labels every scraped series carries (added by Prometheus from the target). */
const TARGET_LABELS = ["job", "instance"];
/** Series Prometheus makes itself for every target. */
const PROMETHEUS_SERIES: Record<string, string[]> = { up: [] };

/** The exported series names and their labels: a histogram's _bucket (with le), _sum and _count. */
function exported(): Map<string, string[]> {
  const metrics = new ServiceMetrics();
  const series = new Map<string, string[]>(Object.entries(PROMETHEUS_SERIES));
  for (const metric of metrics.registry.getMetricsAsArray()) {
    const { name, labelNames = [] } = metric as unknown as { name: string; labelNames?: string[] };
    const type = (metric as unknown as { type?: string }).type;
    if (type === "histogram") {
      series.set(`${name}_bucket`, [...labelNames, "le"]);
      series.set(`${name}_sum`, labelNames);
      series.set(`${name}_count`, labelNames);
    } else {
      series.set(name, labelNames);
    }
  }
  return series;
}

const PROMQL_WORDS = new Set(["by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"]);

/** The series an expression selects (with the labels it matches on) and the labels it groups by. */
function analyse(expr: string): { selectors: Array<{ name: string; labels: string[] }>; grouping: string[] } {
  const selectors: Array<{ name: string; labels: string[] }> = [];
  const grouping: string[] = [];
  let rest = expr.replace(/"(?:[^"\\]|\\.)*"/g, '""');
  rest = rest.replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)/g, (_, _word, labels: string) => {
    grouping.push(
      ...labels
        .split(",")
        .map((l) => l.trim())
        .filter(Boolean),
    );
    return " ";
  });
  rest = rest.replace(/([a-zA-Z_:][a-zA-Z0-9_:]*)?\s*\{([^}]*)\}/g, (_, name: string | undefined, matchers: string) => {
    const labels = [...matchers.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)/g)].map((m) => m[1]);
    const metric = name ?? /__name__\s*=\s*""/.exec(matchers)?.[0];
    if (metric === undefined) throw new Error(`a selector without a metric name in: ${expr}`);
    selectors.push({ name: metric, labels: labels.filter((l) => l !== "__name__") });
    return " ";
  });
  rest = rest.replace(/\[[^\]]*\]/g, " ");
  for (const match of rest.matchAll(/([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?/g)) {
    if (match[2] !== undefined || PROMQL_WORDS.has(match[1].toLowerCase())) continue; // a function, or a keyword
    if (/^\d/.test(match[1])) continue;
    selectors.push({ name: match[1], labels: [] });
  }
  return { selectors, grouping };
}

describe("deploy/prometheus/alerts.yaml", () => {
  const series = exported();

  it("is a rules file: named groups of alerts, each with an expression, a severity and a summary", () => {
    expect(file.groups.length).toBeGreaterThan(0);
    expect(rules.length).toBeGreaterThan(0);
    const names = new Set<string>();
    for (const rule of rules) {
      expect(rule.alert, JSON.stringify(rule)).toMatch(/^[A-Z][A-Za-z0-9]+$/);
      expect(names.has(rule.alert!), `${rule.alert} twice`).toBe(false);
      names.add(rule.alert!);
      expect(rule.expr.trim().length).toBeGreaterThan(0);
      expect(["critical", "warning", "info"]).toContain(rule.labels?.severity);
      expect(rule.annotations?.summary, rule.alert).toBeTruthy();
      if (rule.for !== undefined) expect(rule.for).toMatch(/^\d+[smh]$/);
    }
  });

  it("covers what the checklist promises: failing keys, the invalidation listener, error rates", () => {
    const exprs = rules.map((r) => r.expr).join("\n");
    expect(exprs).toContain("provider_credentials_health_transitions_total");
    expect(exprs).toContain("provider_credentials_invalidation_listener_up");
    expect(exprs).toMatch(/provider_credentials_resolutions_total\{result=~"[^"]*unavailable/);
  });

  it.each(rules.map((r) => [r.alert!, r] as const))("%s names only metrics and labels the service exports", (_, rule) => {
    const { selectors, grouping } = analyse(rule.expr);
    expect(selectors.length).toBeGreaterThan(0);
    const used = new Set<string>(TARGET_LABELS);
    for (const { name, labels } of selectors) {
      expect(series.has(name), `${rule.alert}: ${name} is not a metric of service/src/metrics.ts`).toBe(true);
      const carried = [...series.get(name)!, ...TARGET_LABELS];
      for (const label of labels) expect(carried, `${rule.alert}: ${name} has no label ${label}`).toContain(label);
      for (const label of carried) used.add(label);
    }
    for (const label of grouping) expect([...used], `${rule.alert}: groups by ${label}, which none of its metrics carries`).toContain(label);
  });
});
