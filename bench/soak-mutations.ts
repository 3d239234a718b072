// The administrator loop of the soak: changes to the mutable organisations at
// a steady rate, alternating replicas, with the admin token: credentials
// created, renamed, rotated (new key) and moved behind or away from a proxy
// with expected_version, stale updates (ABORTED expected), deactivated,
// activated, deleted; short-lived teams and organisations created, resolved
// through on the other replica, deleted, and polled until both replicas answer
// NOT_FOUND. Every change is applied to the model (soak-model.ts) when it is
// answered, so the ResolveKey load can judge every call.
import { performance } from "node:perf_hooks";
import type * as grpc from "@grpc/grpc-js";
import { call, codeName } from "./clients.js";
import { Histogram } from "./histogram.js";
import { sleep } from "./processes.js";
import { toOutcome, type ReplicaClients, type ResolveResponse } from "./soak-grpc.js";
import { pairKey, PROXY_BASE, type CreatedCredential } from "./soak-seed.js";
import {
  ErrorTally,
  fakeKey,
  nextActivation,
  Pair,
  PROVIDER_ENUM,
  PROVIDERS,
  random,
  type Cred,
  type OrgSpec,
  type Outcome,
  type Provider,
} from "./soak-model.js";

export interface SoakReplicaClients {
  name: string;
  clients: ReplicaClients;
}

/** Codes after which a change may or may not have been committed. */
const FATE_UNKNOWN = new Set(["UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN", "CANCELLED"]);
const CALL_TIMEOUT_MS = 10_000;

type PairOp = "create" | "rotate_key" | "rename" | "set_api_base" | "stale_update" | "deactivate" | "activate" | "delete";
type OrgOp = "team_create" | "team_delete" | "organization_create" | "organization_delete";

export class Mutator {
  /** Completed changes (and expected refusals) by operation. */
  readonly byOp: Record<string, number> = {};
  /** Calls the service refused as it must (ABORTED for a stale expected_version). */
  expectedRefusals = 0;
  /** ResolveKey checks made by the loop itself (new and deleted teams and organisations). */
  checks = 0;
  /** Calls per replica. */
  readonly perReplica: number[];
  readonly latency = new Histogram();
  mutations = 0;
  /** Ticks skipped because `maxInFlight` changes were still running. */
  skippedTicks = 0;
  private inFlight = 0;
  private ticks = 0;
  private timer: NodeJS.Timeout | undefined;
  private readonly running = new Set<Promise<void>>();
  private readonly rand: () => number;
  private readonly mutablePairs: Pair[];
  private readonly ephemeralTeams: Array<{ id: string; organizationId: string }> = [];
  private readonly ephemeralOrgs: string[] = [];
  private counter = 0;

  constructor(
    private readonly options: {
      replicas: SoakReplicaClients[];
      admin: grpc.Metadata;
      resolver: grpc.Metadata;
      pairs: Map<string, Pair>;
      mutableOrgs: OrgSpec[];
      envKeys: Partial<Record<Provider, string>>;
      staleGraceMs: number;
      errors: ErrorTally;
      ratePerSec: number;
      maxInFlight: number;
      seed: number;
    },
  ) {
    this.rand = random(options.seed);
    this.perReplica = options.replicas.map(() => 0);
    this.mutablePairs = [...options.pairs.values()].filter((p) => !p.fixed);
  }

  /** Launches changes on a fixed schedule (rate × elapsed time), so that a late timer does not lower the rate. */
  start(): void {
    if (this.options.ratePerSec <= 0) return;
    const startedAt = performance.now();
    this.timer = setInterval(
      () => {
        const due = Math.floor(((performance.now() - startedAt) / 1000) * this.options.ratePerSec);
        for (let n = 0; this.ticks < due && n < 100; n++) this.tick();
      },
      Math.max(5, Math.min(50, 500 / this.options.ratePerSec)),
    );
  }

  /** Stops launching changes and waits for those in flight. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await Promise.all([...this.running]);
  }

  private tick(): void {
    const replica = this.ticks++ % this.options.replicas.length;
    if (this.inFlight >= this.options.maxInFlight) {
      this.skippedTicks++;
      return;
    }
    let work: Promise<void> | undefined;
    if (this.rand() < 0.1) {
      work = this.orgOp(replica);
    } else {
      for (let attempt = 0; attempt < 8 && !work; attempt++) {
        const pair = this.mutablePairs[Math.floor(this.rand() * this.mutablePairs.length)];
        if (!pair.busy) work = this.pairOp(pair, replica);
      }
    }
    if (!work) {
      this.skippedTicks++;
      return;
    }
    this.inFlight++;
    const tracked: Promise<void> = work.finally(() => {
      this.inFlight--;
      this.running.delete(tracked);
    });
    this.running.add(tracked);
  }

  // ---------------------------------------------------------------- helpers

  private pick<T>(items: T[]): T {
    return items[Math.floor(this.rand() * items.length)];
  }

  private other(replica: number): number {
    return (replica + 1) % this.options.replicas.length;
  }

  private async rpc<T>(replica: number, service: "credentials" | "organizations", method: string, request: object): Promise<T> {
    this.perReplica[replica]++;
    const started = performance.now();
    try {
      return await call<T>(this.options.replicas[replica].clients[service], method, request, this.options.admin, CALL_TIMEOUT_MS);
    } finally {
      this.latency.record((performance.now() - started) * 1000);
    }
  }

  private done(op: string): void {
    this.mutations++;
    this.byOp[op] = (this.byOp[op] ?? 0) + 1;
  }

  private failed(op: string, replica: number, error: unknown, pair?: Pair): void {
    const e = error as grpc.ServiceError;
    const code = e.code !== undefined ? codeName(e.code) : "CLIENT";
    if (pair && FATE_UNKNOWN.has(code)) pair.uncertain = true;
    this.options.errors.record(`mutation ${op}: ${code}`, `on ${this.options.replicas[replica].name}: ${e.details ?? e.message}`);
  }

  private checkVersion(op: string, cred: Cred, response: CreatedCredential, expected: number): void {
    if (response.version !== expected) {
      this.options.errors.record(`mutation ${op}: BAD_VERSION`, `credential ${cred.id} at version ${response.version}, expected ${expected}`);
    }
    cred.version = response.version;
  }

  /** One ResolveKey call from the loop's own connection, as an Outcome with its time span. */
  private resolve(
    replica: number,
    scope: { organization_id: string } | { team_id: string },
    provider: Provider,
  ): Promise<{ outcome: Outcome; startedAt: number; endedAt: number }> {
    this.perReplica[replica]++;
    const client = this.options.replicas[replica].clients.credentials;
    const startedAt = performance.now();
    return new Promise((resolve) => {
      client.ResolveKey({ ...scope, provider: PROVIDER_ENUM[provider] }, this.options.resolver, { deadline: Date.now() + CALL_TIMEOUT_MS }, (error, response) =>
        resolve({ outcome: toOutcome(error, response as ResolveResponse | undefined), startedAt, endedAt: performance.now() }),
      );
    });
  }

  /** A check: the answer must be right for `pair` (as the load judges it). */
  private async check(what: string, replica: number, scope: { organization_id: string } | { team_id: string }, pair: Pair): Promise<void> {
    this.checks++;
    const { outcome, startedAt, endedAt } = await this.resolve(replica, scope, pair.provider);
    const verdict = await pair.judgeSettled(outcome, startedAt, endedAt, this.options.staleGraceMs);
    if (!verdict.ok)
      this.options.errors.record(
        `check ${what}: ${verdict.kind}`,
        `${JSON.stringify(scope)}/${pair.provider} on ${this.options.replicas[replica].name}: ${verdict.detail}`,
      );
  }

  /** After a delete: every replica must answer NOT_FOUND within the grace period; answers before that must be right for `pair`. */
  private async checkGone(what: string, scope: { organization_id: string } | { team_id: string }, pair: Pair, deletedAt: number): Promise<void> {
    for (let r = 0; r < this.options.replicas.length; r++) {
      for (;;) {
        this.checks++;
        const { outcome, startedAt, endedAt } = await this.resolve(r, scope, pair.provider);
        if (outcome.kind === "not_found") break;
        const verdict = await pair.judgeSettled(outcome, startedAt, endedAt, Infinity);
        if (!verdict.ok) {
          this.options.errors.record(`check ${what}: ${verdict.kind}`, `${JSON.stringify(scope)} on ${this.options.replicas[r].name}: ${verdict.detail}`);
          break;
        }
        if (performance.now() - deletedAt > this.options.staleGraceMs) {
          this.options.errors.record(
            `check ${what}: STALE`,
            `${JSON.stringify(scope)} still resolves on ${this.options.replicas[r].name} ${Math.round(performance.now() - deletedAt)} ms after its deletion`,
          );
          break;
        }
        await sleep(50);
      }
    }
  }

  // ---------------------------------------------------------------- credential changes

  private choose(pair: Pair): PairOp {
    const active = pair.creds.some((c) => c.active);
    const inactive = pair.creds.some((c) => !c.active);
    const weights: Array<[PairOp, number]> = [
      ["create", pair.creds.length === 0 ? 100 : pair.creds.length < 3 ? 3 : 0],
      ["rotate_key", pair.creds.length > 0 ? 3 : 0],
      ["rename", pair.creds.length > 0 ? 1 : 0],
      ["set_api_base", pair.creds.length > 0 ? 1 : 0],
      ["stale_update", pair.creds.length > 0 ? 1 : 0],
      ["deactivate", active ? 2 : 0],
      ["activate", inactive ? 2 : 0],
      ["delete", pair.creds.length > 0 ? 1.5 : 0],
    ];
    const total = weights.reduce((s, [, w]) => s + w, 0);
    let x = this.rand() * total;
    for (const [op, w] of weights) {
      x -= w;
      if (x < 0 && w > 0) return op;
    }
    return "create";
  }

  private async pairOp(pair: Pair, replica: number): Promise<void> {
    pair.begin();
    const op = this.choose(pair);
    const sentAt = performance.now();
    try {
      await this.runPairOp(op, pair, replica);
      pair.changed(sentAt, performance.now(), this.options.staleGraceMs + 2 * CALL_TIMEOUT_MS);
    } catch (error) {
      this.failed(op, replica, error, pair);
    } finally {
      pair.end();
    }
  }

  private async runPairOp(op: PairOp, pair: Pair, replica: number): Promise<void> {
    const update = (cred: Cred, fields: object, expectedVersion = cred.version) =>
      this.rpc<{ credential: CreatedCredential }>(replica, "credentials", "UpdateCredential", {
        credential_id: cred.id,
        expected_version: expectedVersion,
        ...fields,
      });
    switch (op) {
      case "create": {
        const key = fakeKey(pair.provider);
        const name = `soak-${++this.counter}`;
        const apiBase = this.rand() < 0.2 ? PROXY_BASE : null;
        const response = await this.rpc<{ credential: CreatedCredential }>(replica, "credentials", "CreateCredential", {
          organization_id: pair.organizationId,
          provider: PROVIDER_ENUM[pair.provider],
          credential_name: name,
          api_key: key,
          ...(apiBase ? { api_base: apiBase } : {}),
        });
        pair.creds.push({
          id: response.credential.credential_id,
          name,
          key,
          apiBase,
          version: response.credential.version,
          active: true,
          activatedSeq: nextActivation(),
        });
        break;
      }
      case "rotate_key": {
        const cred = this.pick(pair.creds);
        const key = fakeKey(pair.provider);
        const response = await update(cred, { api_key: key });
        this.checkVersion(op, cred, response.credential, cred.version + 1);
        cred.key = key;
        break;
      }
      case "rename": {
        const cred = this.pick(pair.creds);
        const name = `soak-${++this.counter}-renamed`;
        const response = await update(cred, { credential_name: name });
        this.checkVersion(op, cred, response.credential, cred.version + 1);
        cred.name = name;
        break;
      }
      case "set_api_base": {
        const cred = this.pick(pair.creds);
        const apiBase = cred.apiBase ? null : PROXY_BASE;
        // Changing api_base takes the key again (the service never re-sends a stored key to a new destination).
        const response = await update(cred, { api_base: apiBase ?? "", api_key: cred.key });
        this.checkVersion(op, cred, response.credential, cred.version + 1);
        cred.apiBase = apiBase;
        break;
      }
      case "stale_update": {
        // Someone else's edit won: our expected_version is behind (or ahead). ABORTED, nothing changes.
        const cred = this.pick(pair.creds);
        const stale = cred.version > 1 ? cred.version - 1 : cred.version + 1;
        try {
          const response = await update(cred, { credential_name: `soak-${++this.counter}-stale` }, stale);
          this.options.errors.record(
            `mutation ${op}: ACCEPTED`,
            `an update with expected_version ${stale} of credential ${cred.id} at version ${cred.version} was applied`,
          );
          cred.version = response.credential.version;
          return;
        } catch (error) {
          const code = codeName((error as grpc.ServiceError).code);
          if (code !== "ABORTED") throw error;
          this.expectedRefusals++;
        }
        break;
      }
      case "deactivate": {
        const cred = this.pick(pair.creds.filter((c) => c.active));
        const response = await this.rpc<{ credential: CreatedCredential }>(replica, "credentials", "DeactivateCredential", { credential_id: cred.id });
        this.checkVersion(op, cred, response.credential, cred.version + 1);
        cred.active = false;
        break;
      }
      case "activate": {
        const cred = this.pick(pair.creds.filter((c) => !c.active));
        const response = await this.rpc<{ credential: CreatedCredential }>(replica, "credentials", "ActivateCredential", { credential_id: cred.id });
        this.checkVersion(op, cred, response.credential, cred.version + 1);
        cred.active = true;
        cred.activatedSeq = nextActivation();
        break;
      }
      case "delete": {
        const cred = this.pick(pair.creds);
        await this.rpc(replica, "credentials", "DeleteCredential", { credential_id: cred.id });
        pair.creds.splice(pair.creds.indexOf(cred), 1);
        break;
      }
    }
    this.done(op);
  }

  // ---------------------------------------------------------------- teams and organisations

  private async orgOp(replica: number): Promise<void> {
    const choices: OrgOp[] = [];
    if (this.ephemeralTeams.length < 3) choices.push("team_create");
    if (this.ephemeralTeams.length > 0) choices.push("team_delete");
    if (this.ephemeralOrgs.length < 3) choices.push("organization_create");
    if (this.ephemeralOrgs.length > 0) choices.push("organization_delete");
    const op = this.pick(choices);
    const other = this.other(replica);
    const provider = this.pick([...PROVIDERS]);
    try {
      switch (op) {
        case "team_create": {
          const org = this.pick(this.options.mutableOrgs);
          const id = `soak-ephemeral-team-${++this.counter}`;
          await this.rpc(replica, "organizations", "CreateTeam", { team_id: id, organization_id: org.id, name: `Ephemeral ${id}` });
          this.done(op);
          // Listed only once created: the other replica must resolve through it at once.
          await this.check(op, other, { team_id: id }, this.options.pairs.get(pairKey(org.id, provider))!);
          this.ephemeralTeams.push({ id, organizationId: org.id });
          break;
        }
        case "team_delete": {
          const team = this.ephemeralTeams.shift()!;
          await this.rpc(replica, "organizations", "DeleteTeam", { team_id: team.id });
          this.done(op);
          await this.checkGone(op, { team_id: team.id }, this.options.pairs.get(pairKey(team.organizationId, provider))!, performance.now());
          break;
        }
        case "organization_create": {
          const id = `soak-ephemeral-org-${++this.counter}`;
          await this.rpc(replica, "organizations", "CreateOrganization", { organization_id: id, name: `Ephemeral ${id}` });
          this.done(op);
          await this.check(op, other, { organization_id: id }, this.emptyPair(id, provider));
          this.ephemeralOrgs.push(id);
          break;
        }
        case "organization_delete": {
          const id = this.ephemeralOrgs.shift()!;
          await this.rpc(replica, "organizations", "DeleteOrganization", { organization_id: id });
          this.done(op);
          await this.checkGone(op, { organization_id: id }, this.emptyPair(id, provider), performance.now());
          break;
        }
      }
    } catch (error) {
      this.failed(op, replica, error);
    }
  }

  /** The model of an organisation without credentials: the environment fallback, or FAILED_PRECONDITION. */
  private emptyPair(organizationId: string, provider: Provider): Pair {
    const pair = new Pair(organizationId, provider, true, this.options.envKeys[provider]);
    pair.seal();
    return pair;
  }
}
