#!/usr/bin/env bash
# The quickstart demo: a real control plane with Tidepool's API, and real OpenZFS doing the
# work the agents will do. Builds and caches what it needs on first use (see README).
#   scripts/demo.sh          run and exit
#   scripts/demo.sh --keep   leave the control plane up afterwards (Ctrl-C stops it)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
tests/control-plane/build.sh >/dev/null
tests/zfs-vm/build-image.sh >/dev/null
exec cargo run -q --locked -p tidepool-tests --bin demo -- "$@"
