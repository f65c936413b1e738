#!/usr/bin/env bash
# Builds here, on a CPU machine, the binaries that deploy/gpu-check.sh runs on a GPU machine, so
# that the GPU machine's time goes to the checks and not to a 10-minute cargo build.
#
#   deploy/gpu-prebuild.sh                 # torch 2.11.0 (the GPU image's torch), into gpu-prebuilt/
#   NDHTL_TORCH_VERSION=2.9.0 deploy/gpu-prebuild.sh     # another torch
#
# It builds ndhtl and the six numerical test binaries with the tch feature against the libtorch
# of that torch wheel (deploy/libtorch.sh installs it, in $NDHTL_TORCH_VENV if set), strips their debug info, gzips them into
# gpu-prebuilt/ (ignored by git; NDHTL_PREBUILD_OUT picks another folder) and checks that they
# fit the device tool's 64 MiB carry limit. gpu-check.sh, run without --prebuilt, calls this
# script too, so both build the same binaries the same way.
# Then, on the GPU machine, whose torch must be the same version:
#
#   deploy/gpu-check.sh --prebuilt gpu-prebuilt      # with carry: ["gpu-prebuilt"]
#
# The build goes to its own target folder ($NDHTL_PREBUILD_TARGET, default
# /var/tmp/ndhtl-gpu-prebuild-<torch version>-target), so that a different torch does not force
# a rebuild of the everyday tch target.
set -euo pipefail
cd "$(dirname "$0")/.."

torch_version="${NDHTL_TORCH_VERSION:-2.11.0}"
out_dir="${NDHTL_PREBUILD_OUT:-gpu-prebuilt}"
target="${NDHTL_PREBUILD_TARGET:-/var/tmp/ndhtl-gpu-prebuild-$torch_version-target}"
# 0 turns the check off (gpu-check.sh building on the GPU machine itself carries nothing).
carry_limit_bytes="${NDHTL_PREBUILD_CARRY_LIMIT_BYTES:-$((64 * 1024 * 1024))}"
test_names=(plastic_equations training optimizer convolution upload softmax relu clamp cross_entropy)

export NDHTL_TORCH_VERSION="$torch_version"
torch_exports="$(deploy/libtorch.sh)"   # set -e does not see a failure inside eval "$(…)"
eval "$torch_exports"
export CARGO_TARGET_DIR="$target"
export CARGO_PROFILE_RELEASE_STRIP=debuginfo

echo "== building against torch $torch_version (LIBTORCH=$LIBTORCH) into $target" >&2
cargo build --release --features tch --bin ndhtl
test_args=()
for name in "${test_names[@]}"; do test_args+=(--test "$name"); done
# --message-format names the exact test executables, where listing deps/ could pick a stale one.
executables="$(cargo test --release --features tch -p ndhtl-agent "${test_args[@]}" --no-run \
  --message-format=json | python3 -c '
import json, sys
for line in sys.stdin:
    message = json.loads(line)
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["profile"]["test"]:
        print(message["target"]["name"], message["executable"])
')"

rm -rf "$out_dir"
mkdir -p "$out_dir"
gzip -c "$target/release/ndhtl" > "$out_dir/ndhtl.gz"
for name in "${test_names[@]}"; do
  executable="$(awk -v name="$name" '$1 == name { print $2 }' <<< "$executables")"
  if [[ -z "$executable" ]]; then echo "no test executable for $name" >&2; exit 1; fi
  gzip -c "$executable" > "$out_dir/$name.gz"
done
echo "$torch_version" > "$out_dir/TORCH_VERSION"

total_bytes="$(du -cb "$out_dir"/* | tail -1 | cut -f1)"
ls -l "$out_dir" >&2
if (( carry_limit_bytes > 0 && total_bytes > carry_limit_bytes )); then
  echo "gpu-prebuilt is $total_bytes bytes, over the 64 MiB carry limit" >&2
  exit 1
fi
echo "== $out_dir: $((total_bytes / 1024 / 1024)) MiB for torch $torch_version. On the GPU machine:" >&2
echo "deploy/gpu-check.sh --prebuilt $out_dir    # device run: carry [\"$out_dir\"], timeout_s 600"
