#!/usr/bin/env bash
# testfleet (`orchestrator run --local-agents 2 --agent-cpu-cores 1`) against
# pytest-xdist (`pytest -n 2`) on public PyPI suites, from their sdists (the
# tests ship in them). Runs alternate, REPS of each; testfleet's first run
# has no history (a fresh cache dir), its later ones share one cache dir.
# Prints one line per run: suite, tool, run, seconds, passed, skipped,
# xfailed.
#
#   benches/xdist_compare.sh [SUITE...]    (default: toolz python-dateutil)
#   REPS=3 BENCH_DIR=/tmp/xdist-bench ORCHESTRATOR=target/debug/orchestrator
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
REPS=${REPS:-3}
BENCH_DIR=${BENCH_DIR:-/tmp/xdist-bench}
ORCHESTRATOR=${ORCHESTRATOR:-$here/target/debug/orchestrator}
suites=("$@"); [ ${#suites[@]} -gt 0 ] || suites=(toolz python-dateutil)
mkdir -p "$BENCH_DIR" && cd "$BENCH_DIR"
[ -x venv/bin/python ] || python3 -m venv venv
venv/bin/pip install -q pytest pytest-xdist pytest-cov freezegun hypothesis six
py=$BENCH_DIR/venv/bin/python

# suite -> its tests' paths and pytest arguments (files that cannot be
# collected here are left out, for both tools alike).
paths_of() { case $1 in
  toolz) echo "toolz/tests/" ;;
  python-dateutil) echo "tests/" ;;
  more-itertools) echo "tests/" ;;
  *) echo "tests/" ;; esac; }
args_of() { case $1 in
  python-dateutil) echo "--ignore=tests/test_zoneinfo.py --ignore=tests/test_tzfile.py --ignore=tests/property" ;;
  *) echo "" ;; esac; }

counts() { # "passed skipped xfailed" from a pytest summary line
  local p s x
  p=$(grep -oE '[0-9]+ passed' <<<"$1" | tail -1 | cut -d' ' -f1); s=$(grep -oE '[0-9]+ skipped' <<<"$1" | tail -1 | cut -d' ' -f1)
  x=$(grep -oE '[0-9]+ xfailed' <<<"$1" | tail -1 | cut -d' ' -f1)
  echo "${p:-0} ${s:-0} ${x:-0}"; }

for suite in "${suites[@]}"; do
  dir=$(ls -d "$BENCH_DIR"/src/"${suite//-/_}"-*/ 2>/dev/null | head -1 || true)
  if [ -z "$dir" ]; then
    venv/bin/pip download -q --no-deps --no-binary :all: "$suite" -d sdists
    mkdir -p src && tar xzf "$(ls sdists/"${suite//-/_}"-*.tar.gz | head -1)" -C src
    dir=$(ls -d "$BENCH_DIR"/src/"${suite//-/_}"-*/ | head -1)
    venv/bin/pip install -q -e "$dir"
  fi
  dir=${dir%/}
  paths=$(paths_of "$suite"); args=$(args_of "$suite")
  argv=""; for a in $args; do argv="$argv\"$a\", "; done
  cat > "$BENCH_DIR/$suite.yaml" <<YAML
templates:
  pytest:
    command: "$py -m pytest -p no:cacheprovider {args}"
orchestrator:
  task_definitions:
    tests:
      - id: unit
        template: pytest
        args: [${argv%, }]
        working_directory: $dir
        split: {runner: pytest, paths: ["$paths"]}
YAML
  cache="$BENCH_DIR/cache-$suite"; rm -rf "$cache"
  for run in $(seq "$REPS"); do
    start=$(date +%s.%N)
    "$ORCHESTRATOR" run "$BENCH_DIR/$suite.yaml" --local-agents 2 --agent-cpu-cores 1 \
      --report-dir "$BENCH_DIR/report-$suite-$run" --cache-dir "$cache" >/dev/null 2>&1 || true
    t=$(echo "$(date +%s.%N) - $start" | bc)
    pc=$("$py" -c 'import json,sys; r=json.load(open(sys.argv[1])); s=[t for t in r["tasks"] if t["task_id"]=="unit"][0]["split"]; print(s["passed"]+s["flaky"], s["skipped"], s["xfailed"])' "$BENCH_DIR/report-$suite-$run/report.json" 2>/dev/null || echo "? ? ?")
    echo "$suite testfleet $run $t $pc"
    start=$(date +%s.%N)
    out=$(cd "$dir" && "$py" -m pytest -q -p no:cacheprovider -n 2 $args "$paths" 2>&1 | tail -1 || true)
    t=$(echo "$(date +%s.%N) - $start" | bc)
    echo "$suite xdist $run $t $(counts "$out")"
  done
done
