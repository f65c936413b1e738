#!/usr/bin/env bash
# The GPU check of the tch agent, as one short script (steps 1–4 took about 5 minutes on one H100):
#   1. builds the tch binaries (or takes prebuilt ones, see --prebuilt);
#   2. runs the numerical tests (spec §9: equations, finite differences, STL equivalence,
#      resume, learning above chance) on the GPU;
#   3. runs a one-target STL and NDHTL fine-tune on the GPU, on generated data;
#   4. runs `ndhtl bench` on the GPU beside PyTorch on the same GPU;
#   5. times a whole scaled-down reproduction (scripts/reproduction-bench.sh): 4 jobs side by
#      side on the GPU against the same jobs one after another in PyTorch on the same GPU.
# Everything it prints also goes to $OUT_DIR/gpu-check.log.
#
#   deploy/gpu-check.sh                         # on a GPU machine with cargo: builds with
#                                               # deploy/gpu-prebuild.sh, then checks
#   deploy/gpu-check.sh --prebuilt DIR          # binaries built elsewhere (deploy/gpu-prebuild.sh
#                                               # makes them): DIR holds ndhtl,
#                                               # plastic_equations, training, optimizer,
#                                               # convolution, upload, softmax, relu,
#                                               # clamp and cross_entropy
#                                               # (or .gz of them)
#
# Options: --device cuda:N (default cuda:0), --out DIR (default $OUT, the folder the device tool
# brings back, else gpu-check-out). Each step has a time limit, so that one hung step cannot take
# the whole lease; the steps run most important first.
# Building uses the torch that `python3` already has, if any (no download, no venv), else the
# pinned wheel that deploy/libtorch.sh installs. With --prebuilt, the libtorch
# the binaries were built against must be loadable: the script adds the lib folder of the torch
# that `python3` imports (or $LIBTORCH/lib) to LD_LIBRARY_PATH.
set -uo pipefail
cd "$(dirname "$0")/.."

device="cuda:0"
prebuilt=""
out_dir="${OUT:-gpu-check-out}"
while (( $# )); do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --prebuilt) prebuilt="$2"; shift 2 ;;
    --out) out_dir="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out_dir"
exec > >(tee "$out_dir/gpu-check.log") 2>&1
failures=0
step() { echo; echo "== $(date -u +%T) $*"; }
check() { # check NAME SECONDS COMMAND...: runs it for at most SECONDS, records a failure without stopping
  local name="$1" limit="$2"; shift 2
  local started=$SECONDS status=0
  timeout --kill-after=10 "$limit" "$@" || status=$?
  if (( status == 0 )); then echo "-- $name: ok ($((SECONDS - started)) s)"
  elif (( status == 124 || status == 137 )); then
    echo "-- $name: FAILED, stopped at its limit of $limit s"; failures=$((failures + 1))
  else echo "-- $name: FAILED ($((SECONDS - started)) s)"; failures=$((failures + 1)); fi
}

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda)' 2>/dev/null || true

scratch="${TMPDIR:-/tmp}/ndhtl-gpu-check"   # binaries and generated data, not results
bin="$scratch/bin"
mkdir -p "$bin"
machine_torch="$(python3 -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
bench_python=python3   # the PyTorch side of the benchmarks
if [[ -z "$prebuilt" ]]; then
  # Build with deploy/gpu-prebuild.sh, as a CPU machine would, against the machine's own torch
  # if python3 has one (no download), else against the pinned wheel that libtorch.sh installs.
  step "building the tch agent and the numerical tests (deploy/gpu-prebuild.sh)"
  if [[ -n "$machine_torch" ]]; then
    export NDHTL_TORCH_VERSION="$machine_torch" NDHTL_TORCH_PYTHON="$(command -v python3)"
  fi
  torch_exports="$(deploy/libtorch.sh)" || exit 1
  eval "$torch_exports"
  bench_python="$NDHTL_BENCH_PYTHON"
  export NDHTL_TORCH_PYTHON="$NDHTL_BENCH_PYTHON"
  export NDHTL_TORCH_VERSION="$("$NDHTL_BENCH_PYTHON" -c 'import torch; print(torch.__version__.split("+")[0])')"
  prebuilt="$scratch/built"
  env NDHTL_PREBUILD_OUT="$prebuilt" NDHTL_PREBUILD_CARRY_LIMIT_BYTES=0 \
    ${CARGO_TARGET_DIR:+"NDHTL_PREBUILD_TARGET=$CARGO_TARGET_DIR"} deploy/gpu-prebuild.sh >/dev/null || exit 1
  torch_lib="$LIBTORCH/lib"
  runtime_torch="$NDHTL_TORCH_VERSION"
else
  torch_lib="$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)"
  torch_lib="${torch_lib:-${LIBTORCH:-}/lib}"
  runtime_torch="$machine_torch"
fi

step "binaries from $prebuilt"
# Every binary in the folder (gpu-prebuild.sh's list); a missing one fails its step below.
for file in "$prebuilt"/*; do
  name="$(basename "$file" .gz)"
  [[ "$name" == TORCH_VERSION ]] && continue
  if [[ "$file" == *.gz ]]; then gzip -dc "$file" > "$bin/$name"; else cp "$file" "$bin/$name"; fi
  chmod +x "$bin/$name"
done
[[ -x "$bin/ndhtl" ]] || { echo "$prebuilt has no ndhtl (deploy/gpu-prebuild.sh makes it)"; exit 1; }
if [[ -f "$prebuilt/TORCH_VERSION" ]]; then
  built_for="$(cat "$prebuilt/TORCH_VERSION")"
  echo "built against torch $built_for; loading torch ${runtime_torch:-(none in python3)} from $torch_lib"
  [[ "$built_for" == "$runtime_torch" ]] || echo "WARNING: torch versions differ; libtorch may not load"
fi
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
ndhtl="$bin/ndhtl"
"$ndhtl" --version || { echo "the tch binary does not start (libtorch not found?)"; exit 1; }

step "numerical tests on tch:$device"
export NDHTL_TEST_DEVICE="tch:$device"
check "plastic equations" 60 "$bin/plastic_equations" --test-threads 1
check "training" 180 "$bin/training" --test-threads 1
check "optimizer (fused SGD: foreach kernels on the GPU)" 60 "$bin/optimizer" --test-threads 1
check "convolution (ATen's convolution_backward: cuDNN)" 60 "$bin/convolution" --test-threads 1
check "uploads (pinned, asynchronous)" 60 "$bin/upload" --test-threads 1
check "softmax (ATen's fused backward)" 60 "$bin/softmax" --test-threads 1
check "relu (ATen's threshold_backward)" 60 "$bin/relu" --test-threads 1
check "clamp (ATen's hardtanh_backward)" 60 "$bin/clamp" --test-threads 1
check "cross-entropy (ATen's nll_loss)" 60 "$bin/cross_entropy" --test-threads 1

step "one-target fine-tunes on $device (generated data)"
work="$scratch/work"
rm -rf "$work"
"$ndhtl" data synth --out "$work/data" --cifar10-train-per-class 100 \
  --cifar100-train-per-class 60 --cifar100-test-per-class 20 >/dev/null
# Run folders under $work (wiped above): a rerun must train again, not resume the last run's
# finished checkpoints from the default runs/.
check "source training" 120 "$ndhtl" train source --data "$work/data" --out "$work/source.bpk" \
  --run-dir "$work/runs/source" \
  --epochs 3 --lr 0.02 --batch-size 32 --device "$device" --metrics "$out_dir/source.jsonl"
for method in stl ndhtl; do
  check "T1 $method" 120 "$ndhtl" train finetune --data "$work/data" --source "$work/source.bpk" \
    --run-dir "$work/runs/T1-$method" \
    --task T1 --method "$method" --lifetimes 2 --lr 1e-3 --seed 1 --device "$device" \
    --metrics "$out_dir/T1-$method.jsonl"
done
grep -h '"summary"' "$out_dir"/*.jsonl || true

step "benchmark: tch on $device beside PyTorch on the same GPU"
check "bench" 300 "$ndhtl" bench --backends tch --device "$device" --python "$bench_python" \
  --json "$out_dir/bench.json"

step "a scaled-down reproduction on $device: 4 jobs side by side against PyTorch's sequential run"
check "reproduction" 300 env DEVICE="$device" AGENTS=4 NDHTL="$ndhtl" NDHTL_BENCH_PYTHON="$bench_python" \
  scripts/reproduction-bench.sh

step "done: $failures failed step(s)"
exit $(( failures > 0 ))
