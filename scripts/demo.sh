#!/usr/bin/env bash
# Set-up plus the main job on the embedded default: MIPO trains the tiny Llama (random init,
# byte-level tokenizer) against its frozen reference on bundled synthetic pairs, on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
cargo build --quiet --bin poc
"$CARGO_TARGET_DIR/debug/poc" run objectives/mipo.po "$@"
