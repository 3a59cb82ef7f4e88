#!/usr/bin/env bash
# The test suite, exactly as CI runs it: set-up (idempotent), formatting, then every test
# with snapshot checking (a mismatched, pending or orphaned snapshot fails).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. scripts/env.sh
if ! cargo insta --version >/dev/null 2>&1; then
  echo "test: installing cargo-insta (once)"
  cargo install cargo-insta --locked --quiet
fi
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
CI=true cargo insta test --workspace --check --unreferenced=reject
