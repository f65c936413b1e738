#!/usr/bin/env bash
# Times a whole (scaled-down) Table 3 reproduction on this machine, two ways:
#   1. `ndhtl run sweeps/table3-cpu-scaled.yaml --agents N`: jobs side by side, N agents of
#      cores/N threads each;
#   2. the same 21 jobs one after another in PyTorch (agent/bench/pytorch_sweep.py), with all
#      cores, as a researcher's plain script would run them.
# Prints both wall times and their ratio. Needs a release `ndhtl` and a Python with torch:
#   cargo build --release --bin ndhtl && eval "$(deploy/libtorch.sh)"
#   scripts/reproduction-bench.sh                  # flex agents
#   BACKEND=tch NDHTL=target-tch/release/ndhtl scripts/reproduction-bench.sh
#   DEVICE=cuda:0 AGENTS=4 NDHTL=.../ndhtl scripts/reproduction-bench.sh   # one GPU, 4 jobs on it
set -euo pipefail
cd "$(dirname "$0")/.."
ndhtl="${NDHTL:-${CARGO_TARGET_DIR:-target}/release/ndhtl}"
python="${NDHTL_BENCH_PYTHON:-python3}"
agents="${AGENTS:-2}"
device="${DEVICE:-cpu}"
if [[ "$device" == cpu ]]; then backend="${BACKEND:-flex}"; else backend="${BACKEND:-tch}"; fi
cores="$(nproc)"
sweep=sweeps/table3-cpu-scaled.yaml
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$ndhtl" plan "$sweep" --export-jobs "$work/jobs.jsonl" > /dev/null
# The same generated data the agents make from the sweep's `data.synthetic` block.
"$ndhtl" data synth --out "$work/data" --seed 0 \
  --cifar10-train-per-class 60 --cifar10-test-per-class 20 \
  --cifar100-train-per-class 30 --cifar100-test-per-class 10 > /dev/null

echo "ndhtl run: $agents $backend agents on $device ($cores cores)" >&2
start=$(date +%s.%N)
"$ndhtl" run "$sweep" --agents "$agents" --backend "$backend" --device "$device" --state-dir "$work/run" \
  > "$work/run.log" 2>&1 || { tail -20 "$work/run.log"; exit 1; }
end=$(date +%s.%N)

echo "PyTorch on $device, one job after another, $cores threads" >&2
"$python" agent/bench/pytorch_sweep.py --jobs "$work/jobs.jsonl" --data "$work/data" \
  --threads "$cores" --device "$device" > "$work/pytorch.json"

"$python" - "$work/pytorch.json" "$start" "$end" "$agents" "$backend" "$device" <<'PY'
import json, sys
pytorch = json.load(open(sys.argv[1]))
ndhtl = float(sys.argv[3]) - float(sys.argv[2])
print(json.dumps({
    "jobs": pytorch["jobs"],
    "ndhtl_run_seconds": round(ndhtl, 1),
    "ndhtl_agents": int(sys.argv[4]),
    "ndhtl_backend": sys.argv[5],
    "device": sys.argv[6],
    "pytorch_sequential_seconds": round(pytorch["wall_seconds"], 1),
    "pytorch": pytorch["torch"],
    "pytorch_threads": pytorch["threads"],
    "speedup_of_ndhtl": round(pytorch["wall_seconds"] / ndhtl, 2),
}))
PY
