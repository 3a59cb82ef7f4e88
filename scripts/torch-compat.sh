#!/usr/bin/env bash
# Builds poc against another libtorch than the 2.9.0 that tch 0.22 binds and CI uses, and runs
# the CPU test suite with that build: a binary for a machine that ships another torch (the GPU
# machines have torch 2.11) is known to compile and pass before a GPU is seen.
#
#   bash scripts/torch-compat.sh                 # torch 2.11.0, the whole CPU suite
#   bash scripts/torch-compat.sh 2.11.0 --build  # build only (the `poc` binary to carry)
#   POC_COMPAT_TESTS="--test run_cli" bash scripts/torch-compat.sh   # a part of the suite
#
# 1. Installs PyPI's torch==VERSION (with its CUDA libraries, so libtorch_cuda loads on a machine
#    without a GPU) and the Python packages the parity tests import, into
#    $POC_CACHE/torch-VERSION (POC_CACHE defaults to ~/.cache/poc). Idempotent.
# 2. Builds with LIBTORCH pointing at that torch and LIBTORCH_BYPASS_VERSION_CHECK=1, into its own
#    target directory ($POC_CACHE/target-torch-VERSION), so CI's build is untouched.
# 3. Runs `cargo test --workspace` with that libtorch on LD_LIBRARY_PATH and POC_PYTHON set to
#    the same venv (its Python's torch must be the libtorch the binaries load).
# The log goes to $POC_CACHE/torch-VERSION-tests.log; the script's exit code is the suite's.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-2.11.0}"
MODE="${2:-test}"
POC_CACHE="${POC_CACHE:-$HOME/.cache/poc}"
VENV="$POC_CACHE/torch-$VERSION"
say() { echo "torch-compat: $*" >&2; }

command -v cargo >/dev/null || { say "cargo is not installed (this script builds poc)"; exit 1; }
if ! [ -x "$VENV/bin/python" ] ||
   ! "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__.startswith('$VERSION') else 1)" 2>/dev/null; then
  say "installing torch==$VERSION from PyPI into $VENV (several minutes, ~7 GB)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$VERSION"
fi
# What the parity tests import (the same pins as scripts/setup.sh).
if ! "$VENV/bin/python" -c 'import transformers, peft, pyarrow, numpy' 2>/dev/null; then
  say "installing transformers, peft, pyarrow into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    numpy transformers==4.57.1 peft==0.17.1 pyarrow==21.0.0
fi
TORCH_DIR="$("$VENV/bin/python" -c 'import os, torch; print(os.path.dirname(torch.__file__))')"
say "building against torch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)') at $TORCH_DIR"

export LIBTORCH="$TORCH_DIR"
export LIBTORCH_BYPASS_VERSION_CHECK=1
export LD_LIBRARY_PATH="$TORCH_DIR/lib"
export CARGO_TARGET_DIR="$POC_CACHE/target-torch-$VERSION"
export POC_PYTHON="$VENV/bin/python"

if [ "$MODE" = --build ]; then
  cargo build --workspace --release --bin poc
  say "built $CARGO_TARGET_DIR/release/poc"
  exit 0
fi
LOG="$POC_CACHE/torch-$VERSION-tests.log"
say "running the CPU test suite against torch $VERSION (log: $LOG)"
set +e
# shellcheck disable=SC2086
cargo test --workspace ${POC_COMPAT_TESTS:-} 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
grep -E '^test result:' "$LOG" |
  awk '{p+=$4; f+=$6; i+=$8} END {printf "torch-compat: %d passed, %d failed, %d ignored\n", p, f, i}' >&2
exit "$rc"
