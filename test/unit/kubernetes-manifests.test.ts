// deploy/kubernetes, rendered as a cluster would get it (`kubectl kustomize`), checked against the
// code: every environment variable set is one the service's or the portal's settings schema lists
// (and its value passes that setting's rule), secrets come from the Secret by reference (files or
// secretKeyRef, never a literal), every container port and probe is one the process serves with
// those settings, and the replicas, PodDisruptionBudget and NetworkPolicy say what the docs say.
// Needs kubectl (Debian 12: `apt-get install kubernetes-client`, .ci/steps/kubernetes.sh): skipped
// with a message without it, failed when KUBECTL_REQUIRED=1 (CI).
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";
import { describe, expect, it } from "vitest";
import { SERVICE_SETTINGS } from "../../service/src/runtime/settings.js";
import { SERVICE_SECRET_SETTINGS } from "../../service/src/runtime/secret-files.js";
import { READINESS_SERVICE } from "../../service/src/rpc/health.js";
import { PORTAL_SECRET_SETTINGS, PORTAL_SETTINGS } from "../../portal/src/lib/server/settings.js";

const KUBECTL = process.env.KUBECTL || "kubectl";
const REQUIRED = process.env.KUBECTL_REQUIRED === "1";

const kubectlVersion = (() => {
  try {
    return execFileSync(KUBECTL, ["version", "--client"], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], timeout: 30_000 }).trim();
  } catch {
    return undefined;
  }
})();

if (kubectlVersion === undefined && !REQUIRED) {
  console.error(
    `kubernetes-manifests: SKIPPED, no kubectl (${KUBECTL}) on this machine to render deploy/kubernetes; ` +
      "install it (Debian 12: apt-get install kubernetes-client) or set KUBECTL=/path/to/kubectl. CI sets KUBECTL_REQUIRED=1 and fails instead.",
  );
}

// The rendering as plain objects: only what the checks below read is typed.
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: { name: string; key: string }; configMapKeyRef?: unknown; fieldRef?: unknown };
}
interface Probe {
  grpc?: { port: number; service?: string };
  httpGet?: { path: string; port: number | string };
  tcpSocket?: unknown;
  exec?: unknown;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: Array<{ name?: string; containerPort: number }>;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: { allowPrivilegeEscalation?: boolean; readOnlyRootFilesystem?: boolean };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}
interface Volume {
  name: string;
  secret?: { secretName: string; defaultMode?: number; items?: Array<{ key: string; path: string }> };
  emptyDir?: unknown;
}
type Labels = Record<string, string>;
interface Peer {
  podSelector?: { matchLabels?: Labels };
  namespaceSelector?: { matchLabels?: Labels };
  ipBlock?: unknown;
}
interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Labels };
  spec: {
    replicas?: number;
    selector?: Labels | { matchLabels: Labels };
    template?: {
      metadata: { labels: Labels };
      spec: { securityContext?: { runAsNonRoot?: boolean; fsGroup?: number }; containers: Container[]; volumes?: Volume[] };
    };
    ports?: Array<{ name: string; port: number; targetPort: number | string }>;
    minAvailable?: number;
    maxUnavailable?: number;
    podSelector?: { matchLabels: Labels };
    policyTypes?: string[];
    ingress?: Array<{ from?: Peer[]; ports?: Array<{ port: number | string }> }>;
  };
}

function render(): Resource[] {
  const out = execFileSync(KUBECTL, ["kustomize", path.resolve("deploy/kubernetes")], { encoding: "utf8", timeout: 60_000 });
  return parseAllDocuments(out).map((doc) => {
    if (doc.errors.length > 0) throw new Error(`kubectl kustomize printed YAML that does not parse: ${doc.errors[0].message}`);
    return doc.toJS() as Resource;
  });
}

const matches = (selector: Labels, labels: Labels) => Object.entries(selector).every(([k, v]) => labels[k] === v);

/** The settings as a process with this container's environment sees them: each literal value through its setting's rule. */
function effective(settings: Record<string, { schema: { safeParse(raw: string | undefined): { success: boolean; data?: unknown } } }>, env: EnvVar[]) {
  const values: Record<string, unknown> = {};
  for (const [name, setting] of Object.entries(settings)) {
    const literal = env.find((e) => e.name === name)?.value;
    const parsed = setting.schema.safeParse(literal);
    expect(parsed.success, `${name}=${literal} breaks its rule in the settings schema`).toBe(true);
    values[name] = parsed.data;
  }
  return values;
}

/**
 * Every variable a container sets is a setting of `settings`, or NAME_FILE of one of its `secrets`;
 * a secret is never a literal value; each NAME_FILE is a file of a mounted Secret, in its items.
 */
function checkEnvironment(container: Container, volumes: Volume[], settings: Record<string, unknown>, secrets: readonly string[], process: string): void {
  const env = container.env ?? [];
  expect(env.length).toBeGreaterThan(0);
  const known = new Set([...Object.keys(settings), ...secrets.map((s) => `${s}_FILE`)]);
  for (const variable of env) {
    expect(known.has(variable.name), `${container.name} sets ${variable.name}, which the ${process}'s settings schema does not list`).toBe(true);
    expect(
      env.filter((e) => e.name === variable.name),
      `${variable.name} set twice`,
    ).toHaveLength(1);
    if (secrets.includes(variable.name)) {
      // A secret itself: only by reference to a Secret, never a literal in the manifest.
      expect(variable.value, `${variable.name} is a secret: give it as ${variable.name}_FILE or valueFrom.secretKeyRef`).toBeUndefined();
      expect(variable.valueFrom?.secretKeyRef, `${variable.name} must come from a Secret`).toBeDefined();
    }
    if (variable.name.endsWith("_FILE") && secrets.includes(variable.name.slice(0, -"_FILE".length))) {
      const file = variable.value!;
      const mount = (container.volumeMounts ?? []).find((m) => path.posix.dirname(file) === m.mountPath);
      expect(mount, `${variable.name}=${file} is in no mounted volume`).toBeDefined();
      expect(mount!.readOnly).toBe(true);
      const volume = volumes.find((v) => v.name === mount!.name);
      expect(volume?.secret, `${variable.name}: volume ${mount!.name} is not a Secret`).toBeDefined();
      expect(
        volume!.secret!.items?.map((i) => i.path),
        `${variable.name}: ${path.posix.basename(file)} is not among the items of Secret ${volume!.secret!.secretName}`,
      ).toContain(path.posix.basename(file));
      // Readable by the pod's group at most (fsGroup), never by others: the secret-file warning says why.
      expect((volume!.secret!.defaultMode ?? 0o644) & 0o007, `${volume!.name}: defaultMode lets others read the secrets`).toBe(0);
    }
  }
}

function checkHardening(resource: Resource): void {
  const pod = resource.spec.template!.spec;
  expect(pod.securityContext?.runAsNonRoot).toBe(true);
  for (const c of pod.containers) {
    expect(c.resources?.requests?.cpu, `${c.name}: cpu request`).toBeDefined();
    expect(c.resources?.requests?.memory, `${c.name}: memory request`).toBeDefined();
    expect(c.resources?.limits?.memory, `${c.name}: memory limit`).toBeDefined();
    expect(c.securityContext?.allowPrivilegeEscalation).toBe(false);
    expect(c.securityContext?.readOnlyRootFilesystem).toBe(true);
  }
}

describe.skipIf(kubectlVersion === undefined && !REQUIRED)("deploy/kubernetes (kubectl kustomize)", () => {
  // Rendered once, on first use; a missing kubectl under KUBECTL_REQUIRED=1 fails here.
  let rendered: Resource[] | undefined;
  const resources = () => {
    if (kubectlVersion === undefined) {
      throw new Error(`KUBECTL_REQUIRED=1 but ${KUBECTL} cannot run: install it (apt-get install kubernetes-client, .ci/steps/kubernetes.sh)`);
    }
    return (rendered ??= render());
  };
  const one = (kind: string, component: string) => {
    const found = resources().filter((r) => r.kind === kind && r.metadata.labels?.["app.kubernetes.io/component"] === component);
    expect(found, `one ${kind} of the ${component}`).toHaveLength(1);
    return found[0];
  };
  const serviceDeployment = () => one("Deployment", "service");
  const portalDeployment = () => one("Deployment", "portal");
  const serviceContainer = () => serviceDeployment().spec.template!.spec.containers[0];
  const portalContainer = () => portalDeployment().spec.template!.spec.containers[0];
  const serviceSettings = () => effective(SERVICE_SETTINGS, serviceContainer().env ?? []);
  const portalSettings = () => effective(PORTAL_SETTINGS, portalContainer().env ?? []);

  it("renders the service, the portal, their Services, PodDisruptionBudgets and the NetworkPolicy, and no Secret", () => {
    const kinds = resources()
      .map((r) => `${r.kind}/${r.metadata.name}`)
      .sort();
    expect(kinds).toEqual([
      "Deployment/provider-credentials",
      "Deployment/provider-credentials-portal",
      "NetworkPolicy/provider-credentials",
      "PodDisruptionBudget/provider-credentials",
      "PodDisruptionBudget/provider-credentials-portal",
      "Service/provider-credentials",
      "Service/provider-credentials-portal",
    ]);
  });

  it("runs the Dockerfile's image as it is built: its user, its entrypoint (node) and its default argument", () => {
    if (!existsSync("Dockerfile")) return;
    const dockerfile = readFileSync("Dockerfile", "utf8");
    // The last stage's USER, ENTRYPOINT and CMD.
    const last = (instruction: string) => [...dockerfile.matchAll(new RegExp(`^${instruction}\\s+(.+)$`, "gm"))].at(-1)?.[1].trim();
    const [uid, gid] = (last("USER") ?? "").split(":").map(Number);
    const entrypoint = JSON.parse(last("ENTRYPOINT") ?? "[]") as string[];
    const cmd = JSON.parse(last("CMD") ?? "[]") as string[];
    expect(path.basename(entrypoint[0] ?? ""), "the image's entrypoint runs node").toBe("node");
    expect(serviceContainer().args).toEqual(cmd);
    for (const d of [serviceDeployment(), portalDeployment()]) {
      const context = d.spec.template!.spec.securityContext as { runAsUser?: number; runAsGroup?: number; fsGroup?: number };
      expect(context.runAsUser, `${d.metadata.name}: the image's user`).toBe(uid);
      expect(context.runAsGroup).toBe(gid ?? uid);
      // The Secret's files (root's, mode 0440) are readable through this group.
      expect(context.fsGroup).toBe(gid ?? uid);
    }
  });

  it("the service: at least two replicas, hardened, with resources", () => {
    const d = serviceDeployment();
    expect(d.spec.replicas).toBeGreaterThanOrEqual(2);
    // The production build of service/src/main.ts (tsconfig.build.json: outDir dist, rootDir .), as the
    // argument of the image's entrypoint, node: no tsx, no shell.
    expect(serviceContainer().command).toBeUndefined();
    expect(serviceContainer().args).toEqual(["dist/service/src/main.js"]);
    expect(existsSync("service/src/main.ts")).toBe(true);
    expect(serviceDeployment().spec.template!.spec.containers).toHaveLength(1);
    checkHardening(d);
    checkHardening(portalDeployment());
  });

  it("every variable the service sets is in its settings schema, passes its rule, and secrets come from files of a Secret", () => {
    const c = serviceContainer();
    checkEnvironment(c, serviceDeployment().spec.template!.spec.volumes ?? [], SERVICE_SETTINGS, SERVICE_SECRET_SETTINGS, "service");
    const names = (c.env ?? []).map((e) => e.name);
    // What NODE_ENV=production refuses to start without (settings.ts, NODE_ENV).
    expect(names).toContain("NODE_ENV");
    expect(c.env!.find((e) => e.name === "NODE_ENV")!.value).toBe("production");
    for (const required of ["DATABASE_URL", "MASTER_KEY"])
      expect(
        names.some((n) => n === required || n === `${required}_FILE`),
        required,
      ).toBe(true);
    serviceSettings();
  });

  it("the service's container ports are the ports its settings make it serve, and its Service targets them", () => {
    const s = serviceSettings();
    const ports = Object.fromEntries((serviceContainer().ports ?? []).map((p) => [p.name, p.containerPort]));
    expect(ports).toEqual({ grpc: s.GRPC_PORT, connect: s.CONNECT_PORT, metrics: s.METRICS_PORT });
    // Not loopback: the kubelet and other pods must reach it.
    expect(s.HOST).toBe("0.0.0.0");
    const svc = one("Service", "service");
    expect(matches(svc.spec.selector as Labels, serviceDeployment().spec.template!.metadata.labels)).toBe(true);
    for (const p of svc.spec.ports!) {
      const target = typeof p.targetPort === "number" ? p.targetPort : ports[p.targetPort];
      expect(Object.values(ports), `Service port ${p.name} targets ${p.targetPort}, which the container does not serve`).toContain(target);
    }
  });

  it("native gRPC probes: readiness asks the readiness service name, liveness the whole server, on a port serving grpc.health.v1", () => {
    const s = serviceSettings();
    const c = serviceContainer();
    const healthPorts = [s.GRPC_PORT, s.CONNECT_PORT];
    for (const [kind, probe] of [
      ["readiness", c.readinessProbe],
      ["liveness", c.livenessProbe],
      ["startup", c.startupProbe],
    ] as const) {
      if (kind === "startup" && probe === undefined) continue;
      expect(probe?.grpc, `${kind} probe is a native gRPC probe`).toBeDefined();
      expect(healthPorts, `${kind} probe's port`).toContain(probe!.grpc!.port);
    }
    expect(c.readinessProbe!.grpc!.service).toBe(READINESS_SERVICE);
    // "" (or no service): NOT_SERVING only at shutdown, so a database outage never restarts a pod.
    expect(c.livenessProbe!.grpc!.service ?? "").toBe("");
    expect(c.startupProbe?.grpc?.service ?? "").toBe("");
  });

  it("a PodDisruptionBudget keeps a service replica up through voluntary disruptions", () => {
    const pdb = one("PodDisruptionBudget", "service");
    expect(matches((pdb.spec.selector as { matchLabels: Labels }).matchLabels, serviceDeployment().spec.template!.metadata.labels)).toBe(true);
    const replicas = serviceDeployment().spec.replicas!;
    if (pdb.spec.minAvailable !== undefined) {
      expect(pdb.spec.minAvailable).toBeGreaterThanOrEqual(1);
      // Lower than the replicas: a node can still be drained.
      expect(pdb.spec.minAvailable).toBeLessThan(replicas);
    } else {
      expect(pdb.spec.maxUnavailable).toBeGreaterThanOrEqual(1);
      expect(pdb.spec.maxUnavailable).toBeLessThan(replicas);
    }
  });

  it("the NetworkPolicy admits the portal and pods labelled as gateways to the RPC ports, and no one else", () => {
    const policy = one("NetworkPolicy", "service");
    const servicePods = serviceDeployment().spec.template!.metadata.labels;
    const portalPods = portalDeployment().spec.template!.metadata.labels;
    const s = serviceSettings();
    expect(matches(policy.spec.podSelector!.matchLabels, servicePods)).toBe(true);
    expect(policy.spec.policyTypes).toContain("Ingress");
    const containerPorts = (serviceContainer().ports ?? []).map((p) => p.containerPort);
    const rpcPorts = [s.GRPC_PORT, s.CONNECT_PORT] as number[];
    const rules = policy.spec.ingress ?? [];
    let portalAdmitted = false;
    let gatewaysAdmitted = false;
    for (const rule of rules) {
      // A rule without `from` (or without `ports`) would admit everyone (or every port).
      expect(rule.from?.length, "an ingress rule without peers admits every pod").toBeGreaterThan(0);
      expect(rule.ports?.length, "an ingress rule without ports admits every port").toBeGreaterThan(0);
      const ports = rule.ports!.map((p) => p.port);
      for (const port of ports) expect(containerPorts, `NetworkPolicy port ${port}`).toContain(port);
      for (const peer of rule.from!) {
        expect(peer.ipBlock, "no ipBlock peers").toBeUndefined();
        const selector = peer.podSelector?.matchLabels ?? {};
        expect(Object.keys(selector).length, "every peer selects pods by label").toBeGreaterThan(0);
        const isPortal = matches(selector, portalPods) && peer.namespaceSelector === undefined;
        const isGateway = selector["provider-credentials/gateway"] === "true";
        const isScraper = selector["provider-credentials/metrics-scraper"] === "true";
        expect(isPortal || isGateway || isScraper, `peer ${JSON.stringify(peer)} is neither the portal, a gateway nor a metrics scraper`).toBe(true);
        if (isScraper) expect(ports, "metrics scrapers reach the metrics port only").toEqual([s.METRICS_PORT]);
        if (isPortal && ports.includes(s.GRPC_PORT as number)) portalAdmitted = true;
        if (isGateway && rpcPorts.every((p) => ports.includes(p))) gatewaysAdmitted = true;
      }
    }
    expect(portalAdmitted, "the portal reaches the gRPC port").toBe(true);
    expect(gatewaysAdmitted, "gateways reach both RPC ports").toBe(true);
  });

  it("the portal: its variables are in its settings schema, it calls the service's gRPC port, and mounts only the admin token", () => {
    const c = portalContainer();
    const volumes = portalDeployment().spec.template!.spec.volumes ?? [];
    checkEnvironment(c, volumes, PORTAL_SETTINGS, PORTAL_SECRET_SETTINGS, "portal");
    expect(portalDeployment().spec.replicas).toBeGreaterThanOrEqual(2);
    const p = portalSettings();
    expect(c.ports).toEqual([{ name: "http", containerPort: p.PORTAL_PORT, protocol: "TCP" }]);
    expect(p.HOST).toBe("0.0.0.0");
    // CREDENTIALS_SERVICE_URL names the service's Service and the port that leads to GRPC_PORT.
    const url = new URL(p.CREDENTIALS_SERVICE_URL as string);
    const svc = one("Service", "service");
    expect(url.hostname).toBe(svc.metadata.name);
    const servicePort = svc.spec.ports!.find((sp) => sp.port === Number(url.port));
    expect(servicePort, `the service's Service has no port ${url.port}`).toBeDefined();
    expect(servicePort!.targetPort === "grpc" || servicePort!.targetPort === serviceSettings().GRPC_PORT).toBe(true);
    // The portal's process and its HTTP probes: the route exists, on the container's port.
    expect(c.command).toBeUndefined();
    expect(c.args).toEqual(["portal/server.js"]);
    expect(existsSync("portal/server.js")).toBe(true);
    for (const probe of [c.readinessProbe, c.livenessProbe]) {
      expect(probe?.httpGet?.port === "http" || probe?.httpGet?.port === p.PORTAL_PORT).toBe(true);
      expect(existsSync(path.join("portal/src/routes", probe!.httpGet!.path, "+server.ts")), `portal route ${probe!.httpGet!.path}`).toBe(true);
    }
    // Only the admin token: never the database URL or the master key.
    const secretItems = volumes.flatMap((v) => v.secret?.items?.map((i) => i.key) ?? []);
    expect(secretItems).toEqual(["service_admin_token"]);
    const portalSvc = one("Service", "portal");
    expect(matches(portalSvc.spec.selector as Labels, portalDeployment().spec.template!.metadata.labels)).toBe(true);
    expect(portalSvc.spec.ports!.map((sp) => sp.targetPort)).toEqual(["http"]);
  });
});
