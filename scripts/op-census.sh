#!/usr/bin/env bash
# Counts the ATen operator calls of one training step, ndhtl (tch) against the same step in
# PyTorch, on the paths a GPU takes, without a GPU. At batch 1 a GPU step is launch-bound, so
# this count is what to cut there (README, "Benchmark").
#
# Builds agent/bench/op_census/op_census.cpp (a libtorch RecordFunction hook) against the
# torch of $NDHTL_BENCH_PYTHON, preloads it into `ndhtl bench` and into
# agent/bench/pytorch_reference.py, and prints per workload the calls per step of each side,
# then the operators where the two differ. Both sides run the GPU's choices on the CPU
# libtorch: ndhtl with ATen's convolution backward (NDHTL_CONV_GRADIENTS=backend) and the
# foreach SGD (NDHTL_SGD=aten), PyTorch with SGD(foreach=True).
#
#   eval "$(deploy/libtorch.sh)" && cargo build --release --features tch --bin ndhtl
#   NDHTL=$CARGO_TARGET_DIR/release/ndhtl scripts/op-census.sh [--json FILE] [--max-ratio R]
#       [--max-loop-overhead F]
#
# --max-ratio R fails (exit 1) when ndhtl's calls per step (views excluded) exceed R times
# PyTorch's in any workload: CI's guard against a change that adds operators to the step.
# It also counts ndhtl's real fine-tuning loop (loop_b1_stl, loop_b1_ndhtl_k10: the input
# pipeline, the metrics, the windows) against its bare step; --max-loop-overhead F fails when
# the loop adds more than F (0.05: 5 %) to the step's calls.
set -euo pipefail
cd "$(dirname "$0")/.."
ndhtl="${NDHTL:-${CARGO_TARGET_DIR:-target}/release/ndhtl}"
python="${NDHTL_BENCH_PYTHON:-python3}"
workloads="train_b128,train_b1_stl,train_b1_ndhtl_k10"
loops="loop_b1_stl=train_b1_stl,loop_b1_ndhtl_k10=train_b1_ndhtl_k10"   # LOOP=ITS_BARE_STEP
loop_workloads="$(sed 's/=[^,]*//g' <<< "$loops")"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

torch_dir="$("$python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
abi="$("$python" -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"
echo "building the census hook against $torch_dir" >&2
g++ -O2 -std=c++17 -shared -fPIC -I"$torch_dir/include" -D_GLIBCXX_USE_CXX11_ABI="$abi" \
  agent/bench/op_census/op_census.cpp -o "$work/libop_census.so" \
  -L"$torch_dir/lib" -ltorch_cpu -lc10 -Wl,-rpath,"$torch_dir/lib"

echo "ndhtl: $workloads" >&2
NDHTL_OP_CENSUS="$work/ndhtl.json" LD_PRELOAD="$work/libop_census.so" \
  NDHTL_CONV_GRADIENTS=backend NDHTL_SGD=aten OMP_NUM_THREADS=1 \
  "$ndhtl" bench --backends tch --device cpu --quick --no-pytorch \
  --only "$workloads,$loop_workloads" \
  > "$work/ndhtl.log" 2>&1 || { tail -20 "$work/ndhtl.log"; exit 1; }

echo "PyTorch: the same workloads" >&2
NDHTL_OP_CENSUS="$work/pytorch.json" LD_PRELOAD="$work/libop_census.so" \
  "$python" agent/bench/pytorch_reference.py --threads 1 --device cpu --repeats 2 --scale 0.1 \
  --foreach > /dev/null

"$python" agent/bench/op_census_report.py "$work/ndhtl.json" "$work/pytorch.json" \
  --workloads "$workloads" --loops "$loops" "$@"
