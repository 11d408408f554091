#!/usr/bin/env python3
"""The same workloads on Dask distributed and on testfleet, back to back.

    python3 benches/dask_compare.py [--bench target/release/testfleet-bench] [--scale 1.0] [--repeat 5]

Dask: a LocalCluster of one-thread worker processes over TCP on loopback,
as many workers as testfleet has agents. Each workload prints the two
figures and the ratio testfleet/Dask. Throughput figures are the median of
`--repeat` runs on each side: on a shared 2-core machine one run of either can
be off by a third. Needs `pip install dask distributed`.
"""

import argparse
import statistics
import subprocess
import sys
import time

import dask
from dask.distributed import Client, LocalCluster

# 100 worker processes starting at once on two cores take minutes; Dask's
# default 30 s connect timeout then fails the cluster before it is up.
dask.config.set({"distributed.comm.timeouts.connect": "600s", "distributed.comm.timeouts.tcp": "600s"})


def noop(*_deps):
    return None


def dask_throughput(client, n):
    start = time.perf_counter()
    client.gather([client.submit(noop, pure=False) for _ in range(n)])
    return n / (time.perf_counter() - start)


def dask_layered(client, layers, width):
    start = time.perf_counter()
    prev = [client.submit(noop, pure=False) for _ in range(width)]
    for _ in range(1, layers):
        prev = [client.submit(noop, prev[w], prev[(w * 7 + 3) % width], pure=False) for w in range(width)]
    client.gather(prev)
    return layers * width / (time.perf_counter() - start)


def dask_chain_latency_ms(client, n):
    start = time.perf_counter()
    f = client.submit(noop, pure=False)
    for _ in range(1, n):
        f = client.submit(noop, f, pure=False)
    f.result()
    return (time.perf_counter() - start) * 1000 / n


def testfleet(bench, *args):
    out = subprocess.run([bench, *args], check=True, capture_output=True, text=True).stdout
    return {line.split()[0]: float(line.split()[1]) for line in out.splitlines() if line.strip()}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bench", default="target/release/testfleet-bench")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the full task counts")
    p.add_argument("--workers", type=int, nargs="+", default=[4, 100], help="worker counts (the DAG and chain run at 100)")
    p.add_argument("--repeat", type=int, default=5, help="runs of each throughput figure, on each side; their medians are compared")
    a = p.parse_args()
    n = int(20_000 * a.scale)
    layers, width = max(2, int(50 * a.scale)), 200
    chain = int(2_000 * a.scale)
    rows = []

    def show(name, t, d, unit):
        rows.append((name, t, d, unit))
        print(f"{name}: testfleet {t:.3f}, dask {d:.3f} {unit}, ratio {t / d:.2f}", flush=True)

    for workers in a.workers:
        # testfleet first, then Dask: neither runs beside the other's idle
        # processes.
        runs = [testfleet(a.bench, "throughput", "--tasks", str(n), "--agents", str(workers))[f"throughput_{n}_tasks_{workers}_agents"] for _ in range(a.repeat)]
        t_throughput = statistics.median(runs)
        print(f"testfleet: throughput {n} no-op tasks, {workers} agents: {t_throughput:.0f} tasks/s (median of {[round(r) for r in runs]})", flush=True)
        if workers == 100:
            t_layered = testfleet(a.bench, "dag", "--layers", str(layers), "--width", str(width), "--agents", "100")[f"layered_dag_{layers}x{width}_100_agents"]
            t_chain = testfleet(a.bench, "dispatch", "--tasks", str(chain), "--agents", "100")["dispatch_latency_p50_100_agents"]
            print(f"testfleet: layered DAG {t_layered:.0f} tasks/s, chain p50 {t_chain:.3f} ms", flush=True)
        started = time.perf_counter()
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, protocol="tcp", host="127.0.0.1", dashboard_address=None) as cluster, Client(cluster) as client:
            client.wait_for_workers(workers)
            print(f"dask: {workers} workers up in {time.perf_counter() - started:.1f} s", flush=True)
            runs = [dask_throughput(client, n) for _ in range(a.repeat)]
            print(f"dask: throughput {n} no-op tasks, {workers} workers: {[round(r) for r in runs]} tasks/s", flush=True)
            show(f"throughput {n} no-op tasks, {workers} workers", t_throughput, statistics.median(runs), "tasks/s")
            if workers == 100:
                show(f"layered DAG {layers}x{width}, 100 workers", t_layered, dask_layered(client, layers, width), "tasks/s")
                show(f"chain of {chain}: dispatch per hop, 100 workers", t_chain, dask_chain_latency_ms(client, chain), "ms (testfleet p50, Dask mean)")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
