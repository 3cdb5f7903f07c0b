#!/usr/bin/env bash
# The quickstart demo: Tidepool's controller and agent at work on real parts (a real
# kube-apiserver with the chart's RBAC, OpenZFS 2.3 in a VM): the examples applied,
# schedules firing, retention pruning, status and events filling in. Builds and caches what
# it needs on first use (see README).
#   scripts/demo.sh          run and exit (non-zero if Tidepool did not do its part)
#   scripts/demo.sh --keep   leave control plane, agent and controller up (Ctrl-C stops them)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
echo "== Preparing: kube-apiserver, etcd, kubectl, helm (cached: seconds; cold build from Go modules: 10-20 min)"
tests/control-plane/build.sh >/dev/null
echo "== Preparing: the OpenZFS VM image (cached: seconds; cold: about 10 min)"
tests/zfs-vm/build-image.sh >/dev/null
echo "== Building the demo (current: seconds; cold: several minutes; the demo builds the tidepool binary for the VM itself)"
exec cargo run -q --locked -p tidepool-tests --bin demo -- "$@"
