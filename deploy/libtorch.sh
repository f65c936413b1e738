#!/usr/bin/env bash
# libtorch for ndhtl's `tch` backend: the one inside PyPI's torch wheel, at the version that
# burn-tch's tch crate expects (tch 0.22 → torch 2.9.0). The wheel is the CUDA 12.8 build, so
# one install serves CPU and GPU machines. It is about 6.8 GB with its nvidia packages.
#
#   eval "$(deploy/libtorch.sh)"          # creates or reuses the venv, exports the variables
#   cargo build --release --features tch  # then build the tch agent
#
# A second run reuses the venv. The venv lives in $NDHTL_TORCH_VENV (default
# ~/.cache/ndhtl/torch-2.9.0). Progress goes to stderr; stdout is only `export` lines.
#
# NDHTL_TORCH_PYTHON names an interpreter that already has the torch wheel (a GPU image's
# python3, on a machine with no network): its torch is used in place, with no venv, and must be
# exactly NDHTL_TORCH_VERSION.
#
# NDHTL_TORCH_VERSION picks another torch (say, the one a GPU machine's image already has).
# tch is then built with LIBTORCH_BYPASS_VERSION_CHECK=1, which works only while the ATen
# functions tch calls keep their signatures; 2.9.0 is the version we test in CI.
set -euo pipefail
PINNED_TORCH_VERSION="2.9.0"
TORCH_VERSION="${NDHTL_TORCH_VERSION:-$PINNED_TORCH_VERSION}"
venv="${NDHTL_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ndhtl/torch-$TORCH_VERSION}"
python="${PYTHON:-python3}"

torch_version_of() { # torch_version_of PYTHON: its torch's version without the +local part
  "$1" -c "import torch; print(torch.__version__.split('+')[0])" 2>/dev/null
}

if [[ -n "${NDHTL_TORCH_PYTHON:-}" ]]; then
  torch_python="$NDHTL_TORCH_PYTHON"
  found="$(torch_version_of "$torch_python" || true)"
  if [[ "$found" != "$TORCH_VERSION" ]]; then
    echo "NDHTL_TORCH_PYTHON=$torch_python has torch '${found:-none}', not $TORCH_VERSION" >&2
    exit 1
  fi
else
  torch_python="$venv/bin/python"
  if [[ ! -x "$torch_python" || "$(torch_version_of "$torch_python" || true)" != "$TORCH_VERSION" ]]; then
    echo "installing torch==$TORCH_VERSION into $venv (about 4 GB to download)" >&2
    "$python" -m venv "$venv" >&2
    "$torch_python" -m pip install --quiet --upgrade pip >&2
    "$torch_python" -m pip install --quiet "torch==$TORCH_VERSION" numpy >&2
  fi
fi

site="$("$torch_python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
echo "torch $("$torch_python" -c 'import torch; print(torch.__version__)') at $site" >&2
# LIBTORCH: torch-sys links against the wheel directly (no python needed at build time).
echo "export LIBTORCH='$site'"
# At run time the libtorch shared objects (libtorch_cuda.so included) must be found.
echo "export LD_LIBRARY_PATH='$site/lib'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
# `ndhtl bench` runs its PyTorch reference with this interpreter.
echo "export NDHTL_BENCH_PYTHON='$torch_python'"
if [[ "$TORCH_VERSION" != "$PINNED_TORCH_VERSION" ]]; then
  echo "torch $TORCH_VERSION is not the pinned $PINNED_TORCH_VERSION: bypassing tch's version check" >&2
  echo "export LIBTORCH_BYPASS_VERSION_CHECK=1"
else
  echo "unset LIBTORCH_BYPASS_VERSION_CHECK"
fi
