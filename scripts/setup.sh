#!/usr/bin/env bash
# Installs what poc needs beside Rust: libtorch 2.9.0 (the version tch 0.22 binds), taken
# from PyPI's torch wheel into a cache outside the clone. Idempotent: a second run only
# checks. Prints nothing else; source scripts/env.sh afterwards to build against it.
set -euo pipefail
POC_CACHE="${POC_CACHE:-$HOME/.cache/poc}"
VENV="$POC_CACHE/torch-2.9.0"
mkdir -p "$POC_CACHE"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import torch,sys; sys.exit(0 if torch.__version__.startswith("2.9.0") else 1)' 2>/dev/null; then
  echo "setup: libtorch 2.9.0 already in $VENV"
else
  echo "setup: installing torch==2.9.0 from PyPI into $VENV (about 1-3 minutes, ~6.7 GB)"
  python3 -m venv "$VENV"
  # numpy with torch: torch imports it when it loads and, without it, warns "Failed to
  # initialize NumPy" (the torch wheel does not require it); transformers needs it anyway.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check torch==2.9.0 'numpy<3'
  "$VENV/bin/python" -c 'import torch; print("setup: torch", torch.__version__, "ready")'
fi
# transformers: the PyTorch baseline of `poc bench train` and scripts/make_llama_fixture.py.
if ! "$VENV/bin/python" -c 'import transformers' 2>/dev/null; then
  echo "setup: installing transformers==4.57.1 (PyTorch baseline of poc bench train)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check transformers==4.57.1
fi
# peft: checks that LoRA checkpoints load in PEFT (tests/run_cli.rs, scripts/check_peft.py).
if ! "$VENV/bin/python" -c 'import peft' 2>/dev/null; then
  echo "setup: installing peft==0.17.1 (LoRA checkpoint compatibility test)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check peft==0.17.1
fi
# pyarrow: writes the Parquet files that the Parquet reader is checked against (runtime/tests/data_formats.rs).
if ! "$VENV/bin/python" -c 'import pyarrow' 2>/dev/null; then
  echo "setup: installing pyarrow==21.0.0 (Parquet data test)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check pyarrow==21.0.0
fi
