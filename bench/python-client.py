#!/usr/bin/env python3
"""The Python client's resolutions per second, for the record (issue 21): from memory (one thread,
the answer cached and the change stream live) and through the service (every call a ResolveKey:
one thread, and several threads sharing one KeyResolver). Prints one JSON object on stdout.

    python3 bench/python-client.py --url http://127.0.0.1:50051 --token "$RESOLVE_TOKEN" \\
        --organization acme [--team team-1] [--provider openai] [--seconds 3] [--threads 8]

Needs python3 with grpcio and protobuf (Debian: python3-grpcio python3-protobuf); run with the
interpreter that has them (/usr/bin/python3 on Debian when another python3 comes first on PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clients", "python"))

from provider_credentials import KeyResolver  # noqa: E402


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def from_memory(keys: KeyResolver, scope: dict, seconds: float) -> dict:
    keys.resolve(**scope)  # fill
    resolve = keys.resolve
    # Throughput: plain loop, no timing inside.
    count, batch = 0, 10_000
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        for _ in range(batch):
            resolve(**scope)
        count += batch
    elapsed = time.perf_counter() - started
    # Latency: each call timed (the timer's own cost included), on a sample.
    ns = time.perf_counter_ns
    samples = []
    for _ in range(100_000):
        t0 = ns()
        resolve(**scope)
        samples.append(ns() - t0)
    samples.sort()
    return {
        "resolutions": count,
        "seconds": round(elapsed, 3),
        "per_second": round(count / elapsed),
        "p50_us": round(percentile(samples, 0.5) / 1000, 2),
        "p99_us": round(percentile(samples, 0.99) / 1000, 2),
        "stream_live": keys.stream_live,
    }


def through_service(keys: KeyResolver, scope: dict, seconds: float, threads: int) -> dict:
    counts = [0] * threads
    latencies: list = [[] for _ in range(threads)]
    stop = time.perf_counter() + seconds

    def work(i: int) -> None:
        ns = time.perf_counter_ns
        while time.perf_counter() < stop:
            t0 = ns()
            keys.resolve(**scope)
            latencies[i].append(ns() - t0)
            counts[i] += 1

    started = time.perf_counter()
    workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - started
    merged = sorted(x for part in latencies for x in part)
    total = sum(counts)
    return {
        "threads": threads,
        "resolutions": total,
        "seconds": round(elapsed, 3),
        "per_second": round(total / elapsed),
        "p50_ms": round(percentile(merged, 0.5) / 1e6, 3) if merged else None,
        "p99_ms": round(percentile(merged, 0.99) / 1e6, 3) if merged else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=os.environ.get("PC_URL", "http://127.0.0.1:50051"))
    parser.add_argument("--token", default=os.environ.get("PC_RESOLVE_TOKEN", ""))
    parser.add_argument("--organization", default=None)
    parser.add_argument("--team", default=None)
    parser.add_argument("--provider", default="openai")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    if bool(args.organization) == bool(args.team):
        parser.error("give one of --organization and --team")
    scope = {"provider": args.provider, **({"organization_id": args.organization} if args.organization else {"team_id": args.team})}

    result = {"python": sys.version.split()[0]}
    try:
        import grpc
        import google.protobuf

        result["grpcio"], result["protobuf"] = grpc.__version__, google.protobuf.__version__
    except Exception:  # noqa: BLE001 - versions are informative only
        pass
    with KeyResolver(args.url, args.token) as cached:
        if not cached.wait_until_live(10):
            result["warning"] = f"change stream not live ({cached.stats()['stream_error']}): memory figures are within max_staleness_ms only"
        result["memory"] = from_memory(cached, scope, args.seconds)
    with KeyResolver(args.url, args.token, watch=False, max_staleness_ms=0) as direct:
        direct.resolve(**scope)
        result["service_1_thread"] = through_service(direct, scope, args.seconds, 1)
        result["service_threads"] = through_service(direct, scope, args.seconds, args.threads)
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
