#!/usr/bin/env python3
"""The split-scaling profile as real sleeping pytest tests, run by the real
binaries (BENCHMARKS.md, "Scaling a split suite (issue 15)"): the cross-check
of `testfleet-bench split-scaling` at a size this host can carry.

Writes a project whose tests sleep the profile's durations scaled to
--total-seconds (one test per line of benches/profiles/NAME.txt, in its
order, 50 to a file), then for each round and each N of --agents runs
`orchestrator run CONFIG --local-agents N --agent-cpu-cores 1` twice with a
fresh cache dir (a first run, no history; then a second, with it) and prints
the makespan (collection's end to the task's end, from report.json) over
max(longest, total / N), and the speedup over one agent.

  benches/split_scaling_real.py --orchestrator target/release/orchestrator \
      --python /path/to/venv/bin/python --agents 1 4 --rounds 2
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def profile(name):
    with open(os.path.join(HERE, "profiles", name + ".txt")) as f:
        return [float(l) for l in f if l.strip() and not l.startswith("#")]


def write_project(root, ms, python):
    tests = os.path.join(root, "tests")
    os.makedirs(tests)
    for start in range(0, len(ms), 50):
        with open(os.path.join(tests, f"test_{start // 50:03d}.py"), "w") as f:
            f.write("import time\n\n")
            for i in range(start, min(start + 50, len(ms))):
                f.write(f"\ndef test_{i}():\n    time.sleep({ms[i] / 1000:.6f})\n")
    config = os.path.join(root, "split.yaml")
    with open(config, "w") as f:
        f.write(
            "templates:\n"
            f"  pytest: {{command: \"{python} -m pytest -p no:cacheprovider\"}}\n"
            "orchestrator:\n"
            "  task_definitions:\n"
            "    tests:\n"
            "      - id: sleepy\n"
            "        template: pytest\n"
            "        resources: {cpu_cores: 1, memory_mb: 200, timeout: 3600}\n"
            "        split: {runner: pytest, paths: [\"tests/\"]}\n"
        )
    return config


def run(orchestrator, config, agents, cache, report):
    shutil.rmtree(report, ignore_errors=True)
    t0 = time.monotonic()
    p = subprocess.run(
        [orchestrator, "run", config, "--local-agents", str(agents),
         "--agent-cpu-cores", "1", "--cache-dir", cache, "--report-dir", report,
         "--on-escalation", "abort"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    wall = time.monotonic() - t0
    if p.returncode != 0:
        sys.exit(f"run with {agents} agents failed:\n{p.stderr[-3000:]}")
    with open(os.path.join(report, "report.json")) as f:
        r = json.load(f)
    task = next(t for t in r["tasks"] if t["task_id"] == "sleepy")
    collected = task["attempts"][0]["ended_at_ms"]
    split = task["split"]
    return {
        "makespan": (task["ended_at_ms"] - collected) / 1000,
        "wall": wall,
        "batches": split["batches"],
        "hedges": len(split["hedges"]),
        "passed": split["passed"],
    }


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--orchestrator", required=True)
    a.add_argument("--python", required=True, help="a python with pytest")
    a.add_argument("--profile", default="dateutil")
    a.add_argument("--total-seconds", type=float, default=120)
    a.add_argument("--agents", type=int, nargs="+", default=[1, 4])
    a.add_argument("--rounds", type=int, default=2)
    args = a.parse_args()
    measured = profile(args.profile)
    scale = args.total_seconds * 1000 / sum(measured)
    ms = [m * scale for m in measured]
    total, longest = sum(ms) / 1000, max(ms) / 1000
    print(f"tests {len(ms)}  total {total:.1f} s  longest {longest:.1f} s")
    work = tempfile.mkdtemp(prefix="split-scaling-")
    config = write_project(os.path.join(work, "project"), ms, args.python)
    got = {}
    for rnd in range(args.rounds):
        # Alternating: every N once per round, in turn.
        for n in args.agents:
            cache = os.path.join(work, f"cache-{n}-{rnd}")
            for which in ("first", "second"):
                r = run(args.orchestrator, config, n, cache, os.path.join(work, "report"))
                bound = max(longest, total / n)
                got.setdefault((n, which), []).append(r["makespan"])
                print(f"round {rnd} agents {n} {which}: makespan {r['makespan']:.1f} s "
                      f"(wall {r['wall']:.1f} s, {r['batches']} batches, {r['hedges']} hedges, "
                      f"{r['passed']} passed) = {r['makespan'] / bound:.3f} x bound {bound:.1f} s",
                      flush=True)
    for which in ("first", "second"):
        for n in args.agents:
            m = statistics.median(got[(n, which)])
            bound = max(longest, total / n)
            one = statistics.median(got[(1, which)]) if (1, which) in got else float("nan")
            print(f"{which} run, {n} agents: median makespan {m:.1f} s = {m / bound:.3f} x bound, "
                  f"speedup {one / m:.2f} x (ceiling {total / bound:.2f} x)")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
