#!/usr/bin/env bash
# Builds versitygw (an S3-compatible gateway; its posix backend stores objects as files)
# from its Go module, once, into a cache outside the repo, and installs Debian's `age`
# CLI where it is missing (the test restores an encrypted stream with it, by hand):
#
#   ${TIDEPOOL_CACHE:-$HOME/.cache/tidepool}/versitygw/<version>/bin/versitygw
#
# The object-store tests (tests/tests/objstore_*.rs) start it through
# tidepool_tests::s3_server and fail with a message naming this script when it is absent.
#
# Usage:
#   build.sh              build if missing; print the bin directory on stdout
#   build.sh --bin-dir    print the bin directory without building
#
# Progress goes to stderr; stdout is only the bin directory. Never downloads a prebuilt
# binary: it is compiled from source fetched through Go's configured module proxy.
set -euo pipefail

VERSITYGW_VERSION=v1.8.0

log() { printf 'object-store/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mode=build
case "${1:-}" in
    "") ;;
    --bin-dir) mode=bin-dir ;;
    -h | --help) sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

CACHE_ROOT=${TIDEPOOL_CACHE:-$HOME/.cache/tidepool}/versitygw
BIN_DIR="$CACHE_ROOT/$VERSITYGW_VERSION/bin"

if [[ $mode == bin-dir ]]; then
    echo "$BIN_DIR"
    exit 0
fi
# Debian's age CLI: the test restores an encrypted stream with it, as a person would.
if ! command -v age >/dev/null 2>&1; then
    command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]] ||
        die "the age CLI is missing; install Debian's 'age' package (or re-run as root)"
    log "installing Debian's age CLI with apt-get"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >&2; then
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq age >&2 || die "apt-get could not install age"
    fi
fi

if [[ -x $BIN_DIR/versitygw ]]; then
    log "cached: $BIN_DIR"
    echo "$BIN_DIR"
    exit 0
fi

# tests/control-plane/build.sh installs Go with apt-get where it is missing (into
# /usr/lib/go-1.N/bin, not on PATH); look there too.
if ! command -v go >/dev/null 2>&1; then
    for d in /usr/local/go/bin /usr/lib/go-1.2*/bin; do
        [[ -x $d/go ]] && PATH="$d:$PATH"
    done
fi
command -v go >/dev/null 2>&1 ||
    die "no go found; run tests/control-plane/build.sh first (it installs Go) or install Go"

mkdir -p "$CACHE_ROOT"
# Several test binaries (or people) may ask at once: one builds, the others wait.
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then
    log "another build holds $CACHE_ROOT/.build.lock; waiting"
    flock 9
fi
if [[ -x $BIN_DIR/versitygw ]]; then
    log "cached: $BIN_DIR"
    echo "$BIN_DIR"
    exit 0
fi

STAGE="$CACHE_ROOT/$VERSITYGW_VERSION/bin.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE"
started=$SECONDS
log "building versitygw $VERSITYGW_VERSION (go install; a few minutes cold)"
# Outside any module, so go install resolves versitygw's own go.mod.
(cd "$STAGE" && GOTOOLCHAIN=${GOTOOLCHAIN:-auto} CGO_ENABLED=0 GOBIN="$STAGE" \
    go install -trimpath -ldflags "-s -w" "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION")
[[ -x $STAGE/versitygw ]] || die "go install produced no versitygw"
"$STAGE/versitygw" --version >&2 || true
rm -rf "$BIN_DIR"
mv "$STAGE" "$BIN_DIR"
log "built in $((SECONDS - started)) s: $BIN_DIR"
echo "$BIN_DIR"
