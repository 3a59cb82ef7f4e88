# Source this (". scripts/env.sh") to build and run poc against the cached libtorch.
# Sets LIBTORCH for torch-sys, LD_LIBRARY_PATH for running, and a cargo target dir in the
# cache so that fresh clones reuse an earlier build of the heavy dependencies.
POC_CACHE="${POC_CACHE:-$HOME/.cache/poc}"
_poc_site=$(ls -d "$POC_CACHE"/torch-2.9.0/lib/python3*/site-packages 2>/dev/null | head -n 1)
if [ -z "$_poc_site" ] || [ ! -d "$_poc_site/torch/lib" ]; then
  echo "poc: libtorch not found under $POC_CACHE; run scripts/setup.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
export LIBTORCH="${LIBTORCH:-$_poc_site/torch}"
export LD_LIBRARY_PATH="$LIBTORCH/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$POC_CACHE/target}"
unset _poc_site
