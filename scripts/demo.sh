#!/usr/bin/env bash
# ndhtl demo, on the embedded CPU backend (flex), from a fresh clone:
#   1. generated CIFAR-10/100 data in the official binary layouts;
#   2. a source model trained on (generated) CIFAR-10;
#   3. STL and NDHTL fine-tunes of target task T1, same seed, same data order;
#   4. a short real-data source run on the CIFAR-10 subset in ../shared/data, when it is there.
# Ends with a table of the results. `--quick` makes everything smaller (used by CI).
# Output goes to ./demo (or $NDHTL_DEMO_DIR); rerunning resumes from the checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=0
[[ "${1:-}" == "--quick" ]] && quick=1
out="${NDHTL_DEMO_DIR:-demo}"
target="${CARGO_TARGET_DIR:-target}"

echo "== building ndhtl (release)"
cargo build --release --bin ndhtl
ndhtl="$target/release/ndhtl"
"$ndhtl" --version

if (( quick )); then
  c10=60; c100=30; c100_test=10; source_epochs=3; lifetimes=2; real_per_class=400; real_epochs=2
else
  c10=300; c100=100; c100_test=30; source_epochs=8; lifetimes=5; real_per_class=400; real_epochs=3
fi

echo "== 1. generated data -> $out/data"
"$ndhtl" data synth --out "$out/data" --cifar10-train-per-class "$c10" \
  --cifar100-train-per-class "$c100" --cifar100-test-per-class "$c100_test" >/dev/null

echo "== 2. source model (CIFAR-10, generated)"
"$ndhtl" train source --data "$out/data" --out "$out/source.bpk" --epochs "$source_epochs" \
  --lr 0.02 --batch-size 32 --run-dir "$out/runs/source" --metrics "$out/source.jsonl"

for method in stl ndhtl; do
  echo "== 3. fine-tune T1 with $method"
  "$ndhtl" train finetune --data "$out/data" --source "$out/source.bpk" --task T1 \
    --method "$method" --lifetimes "$lifetimes" --lr 1e-3 --seed 1 \
    --run-dir "$out/runs/T1-$method" --metrics "$out/T1-$method.jsonl"
done

real="../shared/data/cifar-10-subset"
if [[ -f "$real/cifar-10-batches-bin/test_batch.bin" ]]; then
  echo "== 4. real data: source training on the CIFAR-10 subset ($real_per_class images per class)"
  "$ndhtl" train source --data "$real" --out "$out/real-source.bpk" --epochs "$real_epochs" \
    --lr 0.05 --batch-size 64 --train-per-class "$real_per_class" \
    --run-dir "$out/runs/real-source" --metrics "$out/real-source.jsonl"
else
  echo "== 4. skipped: no CIFAR-10 subset at $real (see README, 'Real data')"
fi

echo
echo "| run | lifetimes | final top-1 % | final top-5 % | final val loss |"
echo "|---|---|---|---|---|"
for run in source T1-stl T1-ndhtl real-source; do
  file="$out/$run.jsonl"
  [[ -f "$file" ]] || continue
  python3 - "$file" "$run" <<'PY' 2>/dev/null || grep '"summary"' "$file"
import json, sys
summary = [json.loads(l) for l in open(sys.argv[1]) if '"summary"' in l][-1]
print(f"| {sys.argv[2]} | {summary['lifetimes']} | {summary['final_top1']:.2f} | {summary['final_top5']:.2f} | {summary['final_val_loss']:.4f} |")
PY
done
