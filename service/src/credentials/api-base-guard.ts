/**
 * Where an api_base may point. A key check sends a request to the api_base and
 * stores what came back, so by default an api_base must not reach the service's
 * own network: loopback, link-local (the cloud metadata address 169.254.169.254
 * included), private, unique-local and unspecified addresses are refused, in
 * IPv4-mapped IPv6 form too. An operator allows named hosts or networks with
 * API_BASE_ALLOW (host names, IP addresses and CIDR networks, comma-separated).
 *
 * Checked on save (the address or, for a host name, every address it resolves
 * to) and again when a check sends the key: the name is resolved once, every
 * address is vetted, and the connection goes to a vetted address (no second
 * lookup that DNS rebinding could answer differently).
 */
import { lookup as dnsLookup } from "node:dns/promises";
import { request as httpRequest } from "node:http";
import { request as httpsRequest } from "node:https";
import { BlockList, isIP } from "node:net";
import { Readable } from "node:stream";
import { invalid } from "../errors.js";

export type RefusedKind = "loopback" | "link-local" | "private" | "unique-local" | "unspecified";

const REFUSED: ReadonlyArray<{ kind: RefusedKind; network: string; prefix: number; type: "ipv4" | "ipv6" }> = [
  { kind: "unspecified", network: "0.0.0.0", prefix: 8, type: "ipv4" },
  { kind: "loopback", network: "127.0.0.0", prefix: 8, type: "ipv4" },
  { kind: "link-local", network: "169.254.0.0", prefix: 16, type: "ipv4" },
  { kind: "private", network: "10.0.0.0", prefix: 8, type: "ipv4" },
  { kind: "private", network: "172.16.0.0", prefix: 12, type: "ipv4" },
  { kind: "private", network: "192.168.0.0", prefix: 16, type: "ipv4" },
  { kind: "loopback", network: "::1", prefix: 128, type: "ipv6" },
  // :: and the deprecated IPv4-compatible forms (::a.b.c.d); ::1 is matched above first.
  { kind: "unspecified", network: "::", prefix: 96, type: "ipv6" },
  { kind: "link-local", network: "fe80::", prefix: 10, type: "ipv6" },
  { kind: "unique-local", network: "fc00::", prefix: 7, type: "ipv6" },
];

const REFUSED_LISTS = REFUSED.map(({ kind, network, prefix, type }) => {
  const list = new BlockList();
  list.addSubnet(network, prefix, type);
  return { kind, list };
});

/** Which refused kind an IP address is (IPv4-mapped IPv6 addresses count as their IPv4 address), or undefined. */
export function refusedKind(address: string): RefusedKind | undefined {
  const family = isIP(address);
  if (family === 0) return undefined;
  const type = family === 4 ? "ipv4" : "ipv6";
  return REFUSED_LISTS.find(({ list }) => list.check(address, type))?.kind;
}

export interface ApiBaseAllowList {
  /** Host names allowed whatever they resolve to (lower case, no trailing dot). */
  hosts: ReadonlySet<string>;
  /** Addresses and networks allowed. */
  networks: BlockList;
}

const HOST_NAME = /^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$/;

/** API_BASE_ALLOW's value as an allow list; throws an Error naming the first entry that is not a host name, address or CIDR network. */
export function parseApiBaseAllow(raw: string | undefined): ApiBaseAllowList {
  const hosts = new Set<string>();
  const networks = new BlockList();
  for (const part of (raw ?? "").split(",")) {
    const entry = part.trim().toLowerCase();
    if (entry === "") continue;
    const slash = entry.indexOf("/");
    if (slash !== -1) {
      const address = unbracket(entry.slice(0, slash));
      const prefixText = entry.slice(slash + 1);
      const family = isIP(address);
      const prefix = Number(prefixText);
      if (family === 0 || !/^\d{1,3}$/.test(prefixText) || prefix > (family === 4 ? 32 : 128)) {
        throw new Error(`API_BASE_ALLOW: "${entry}" is not a CIDR network (e.g. 10.0.0.0/8 or fd00::/8)`);
      }
      networks.addSubnet(address, prefix, family === 4 ? "ipv4" : "ipv6");
    } else if (isIP(unbracket(entry)) !== 0) {
      const address = unbracket(entry);
      networks.addAddress(address, isIP(address) === 4 ? "ipv4" : "ipv6");
    } else {
      const host = entry.replace(/\.$/, "");
      if (!HOST_NAME.test(host)) throw new Error(`API_BASE_ALLOW: "${entry}" is not a host name, IP address or CIDR network`);
      hosts.add(host);
    }
  }
  return { hosts, networks };
}

function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

export interface ResolvedAddress {
  address: string;
  family: 4 | 6;
}

export type Resolve = (hostname: string) => Promise<ResolvedAddress[]>;

const systemResolve: Resolve = async (hostname) =>
  (await dnsLookup(hostname, { all: true, verbatim: true })).map(({ address, family }) => ({ address, family: family === 6 ? 6 : 4 }));

/** The outcome of vetting a host: the addresses to connect to, or why it is refused, or that it did not resolve. */
export type Vetted =
  { ok: true; addresses: ResolvedAddress[] } | { ok: false; refused: RefusedKind; literal: boolean } | { ok: false; refused?: undefined; error: unknown };

export class ApiBaseGuard {
  constructor(
    private readonly allow: ApiBaseAllowList = parseApiBaseAllow(""),
    private readonly resolve: Resolve = systemResolve,
  ) {}

  /**
   * Resolves a URL's host once and vets every address: all must be allowed
   * (not of a refused kind, or listed in API_BASE_ALLOW), unless the host name
   * itself is listed.
   */
  async vet(url: URL): Promise<Vetted> {
    const host = unbracket(url.hostname.toLowerCase()).replace(/\.$/, "");
    const family = isIP(host);
    if (family !== 0) {
      const refused = this.refused(host, family);
      return refused ? { ok: false, refused, literal: true } : { ok: true, addresses: [{ address: host, family: family === 6 ? 6 : 4 }] };
    }
    let addresses: ResolvedAddress[];
    try {
      addresses = await this.resolve(host);
    } catch (error) {
      return { ok: false, error };
    }
    if (addresses.length === 0) return { ok: false, error: new Error("no address") };
    if (this.allow.hosts.has(host)) return { ok: true, addresses };
    for (const { address, family: f } of addresses) {
      const refused = this.refused(address, f);
      if (refused) return { ok: false, refused, literal: false };
    }
    return { ok: true, addresses };
  }

  /**
   * On save: refuses (INVALID_ARGUMENT naming api_base) an api_base that points
   * at a refused address. A name that does not resolve now is accepted:
   * nothing is sent on save, and a check vets it again before sending.
   */
  async checkOnSave(apiBase: string | null): Promise<void> {
    if (apiBase === null) return;
    const vetted = await this.vet(new URL(apiBase));
    if (!vetted.ok && vetted.refused) throw invalid("api_base", refusal(vetted.refused, vetted.literal));
  }

  private refused(address: string, family: number): RefusedKind | undefined {
    const kind = refusedKind(address);
    if (kind === undefined) return undefined;
    return this.allow.networks.check(address, family === 6 ? "ipv6" : "ipv4") ? undefined : kind;
  }
}

/** Why an api_base is refused, for the api_base field (never the resolved address of a name). */
export function refusal(kind: RefusedKind, literal: boolean): string {
  return (
    `${literal ? "is" : "resolves to"} ${kind === "unspecified" ? "an" : "a"} ${kind} address; ` +
    `loopback, link-local, private, unique-local and unspecified addresses are refused unless an operator allows the host or network with API_BASE_ALLOW`
  );
}

/**
 * A fetch (GET, no redirects followed) that connects only to the given,
 * already vetted addresses: the socket's host lookup answers with them instead
 * of asking DNS again. TLS still verifies the certificate against the URL's host.
 */
export function pinnedFetch(addresses: readonly ResolvedAddress[]): typeof fetch {
  const lookup = (
    _hostname: string,
    options: { all?: boolean },
    callback: (error: Error | null, address: string | Array<{ address: string; family: number }>, family?: number) => void,
  ) => {
    if (options.all) callback(null, [...addresses]);
    else callback(null, addresses[0].address, addresses[0].family);
  };
  return ((input: string | URL | Request, init?: RequestInit) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : input);
      const headers = new Headers(init?.headers);
      const request = (url.protocol === "https:" ? httpsRequest : httpRequest)(
        url,
        // A connection of its own (no pool): it goes to the vetted address and nowhere else.
        { method: init?.method ?? "GET", headers: Object.fromEntries(headers), lookup, agent: false, signal: init?.signal ?? undefined },
        (res) => {
          const status = res.statusCode ?? 0;
          const responseHeaders = new Headers();
          for (const [name, value] of Object.entries(res.headers)) {
            for (const one of Array.isArray(value) ? value : value === undefined ? [] : [value]) responseHeaders.append(name, one);
          }
          const noBody = status === 204 || status === 205 || status === 304 || init?.method === "HEAD" || status < 200 || status > 599;
          if (noBody) res.resume();
          const body = noBody ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>);
          try {
            resolve(new Response(body, { status: status >= 200 && status <= 599 ? status : 599, headers: responseHeaders }));
          } catch (error) {
            res.destroy();
            reject(error instanceof Error ? error : new Error(String(error)));
          }
        },
      );
      request.on("error", reject);
      request.end();
    })) as typeof fetch;
}
