#!/usr/bin/env bash
# The one test command (the README's, and what .ci/run calls).
#
# Installs and builds what the tests need (cached under ${TIDEPOOL_CACHE:-~/.cache/tidepool}),
# checks formatting and lints, then runs every test (CRD freshness among them): unit tests, the
# control-plane tests against a real kube-apiserver + etcd, the zfs conformance tests
# against real OpenZFS 2.3 in a QEMU VM, and the object-store tests against a real
# S3-compatible server (versitygw). Nothing is skipped: a part that cannot run fails.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n== %s (%ss)\n' "$*" "$SECONDS"; }

step "toolchain"
[ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
for tool in cargo go; do
  command -v "$tool" >/dev/null || { echo "missing $tool: install it first" >&2; exit 1; }
done
cargo fmt --version >/dev/null && cargo clippy --version >/dev/null
# CI builds in a fresh clone each time: keep its cargo target dir in the cache, so a warm
# run recompiles only Tidepool's own crates, not every dependency.
if [ -n "${CI:-}" ] && [ -z "${CARGO_TARGET_DIR:-}" ]; then
  export CARGO_TARGET_DIR="${TIDEPOOL_CACHE:-$HOME/.cache/tidepool}/cargo-target"
  # A fresh clone is compiled once: incremental state (about 15 GB for the test binaries)
  # would only fill the disk run after run.
  export CARGO_INCREMENTAL=0
fi

step "control plane: kube-apiserver, etcd, kubectl, helm (built from Go modules, cached)"
tests/control-plane/build.sh

step "OpenZFS VM image (Debian packages + DKMS, cached)"
tests/zfs-vm/build-image.sh

step "S3-compatible server for the object-store tests: versitygw (built from Go modules, cached)"
tests/object-store/build.sh >/dev/null

step "image tools and base (buildah, debootstrap; the base root is cached)"
scripts/build-image.sh --base-only >/dev/null

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked -- --nocapture 2>&1 | tee "${TMPDIR:-/tmp}/tidepool-test.log"

step "done"
