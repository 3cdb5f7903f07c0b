#!/usr/bin/env bash
# Builds kube-apiserver, kubectl (Kubernetes 1.34), etcd (3.6) and helm (3) from Go
# modules, once, into a cache outside the repo:
#
#   ${TIDEPOOL_CACHE:-$HOME/.cache/tidepool}/control-plane/<version>/bin/
#
# <version> names the Kubernetes, etcd and helm versions plus a hash of the wrapper
# modules (go.mod/go.sum) and the build flags, so any change to them is a new cache entry
# and a warm run only checks that four files exist.
#
# Usage:
#   build.sh              build what is missing; print the bin directory on stdout
#   build.sh --bin-dir    print the bin directory without building
#   build.sh --update     regenerate the wrapper modules' staging `replace` list and go.sum
#                         from k8s.io/kubernetes' own go.mod (run after bumping a version)
#
# Progress goes to stderr; stdout is only the bin directory. Never downloads a prebuilt
# binary: everything is compiled from source fetched through Go's configured module proxy.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
HELM_VERSION=v3.22.0

log() { printf 'control-plane/build.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

mode=build
case "${1:-}" in
    "") ;;
    --bin-dir) mode=bin-dir ;;
    --update) mode=update ;;
    -h | --help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

# --- versions: the wrapper go.mod files are the single source of truth -------------------
required_version() { # <go.mod> <module path>: the version in `require M v` or a require block
    awk -v m="$2" '$1 == "require" && $2 == m { print $3; exit } $1 == m && $2 ~ /^v/ { print $2; exit }' "$1"
}
K8S_VERSION=$(required_version "$HERE/kube/go.mod" k8s.io/kubernetes)
ETCD_VERSION=$(required_version "$HERE/etcd/go.mod" go.etcd.io/etcd/server/v3)
[[ $K8S_VERSION =~ ^v1\.([0-9]+)\.[0-9]+$ ]] || die "cannot read the k8s.io/kubernetes version from kube/go.mod"
K8S_MINOR=${BASH_REMATCH[1]}
# Staging modules (k8s.io/api, k8s.io/apiserver, ...) are published as v0.<minor>.<patch>.
STAGING_VERSION=v0.${K8S_VERSION#v1.}
[[ -n $ETCD_VERSION ]] || die "cannot read the etcd version from etcd/go.mod"

K8S_LDFLAGS="-s -w \
 -X k8s.io/component-base/version.gitVersion=$K8S_VERSION \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=$K8S_MINOR \
 -X k8s.io/component-base/version.gitTreeState=clean \
 -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION \
 -X k8s.io/client-go/pkg/version.gitMajor=1 \
 -X k8s.io/client-go/pkg/version.gitMinor=$K8S_MINOR"
HELM_LDFLAGS="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"

cache_key() {
    {
        cat "$HERE/kube/go.mod" "$HERE/kube/go.sum" "$HERE/etcd/go.mod" "$HERE/etcd/go.sum" 2>/dev/null || true
        printf '%s\n' "$HELM_VERSION" "$K8S_LDFLAGS" "$HELM_LDFLAGS" "CGO_ENABLED=0 -trimpath"
    } | sha256sum | cut -c1-12
}

CACHE_ROOT=${TIDEPOOL_CACHE:-$HOME/.cache/tidepool}/control-plane
VERSION_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$(cache_key)"
BIN_DIR="$VERSION_DIR/bin"
BINARIES=(kube-apiserver kubectl etcd helm)

if [[ $mode == bin-dir ]]; then
    echo "$BIN_DIR"
    exit 0
fi

all_present() {
    local b
    for b in "${BINARIES[@]}"; do [[ -x "$BIN_DIR/$b" ]] || return 1; done
}

if [[ $mode == build ]] && all_present; then
    log "cached: $BIN_DIR"
    echo "$BIN_DIR"
    exit 0
fi

# --- Go toolchain ----------------------------------------------------------------------
go_is_usable() { # go >= 1.21 understands GOTOOLCHAIN and can fetch the toolchain go.mod names
    command -v go >/dev/null 2>&1 || return 1
    local v
    v=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null) || return 1
    [[ $v =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] >= 21))
}

ensure_go() {
    go_is_usable && return 0
    for d in /usr/local/go/bin /usr/lib/go-1.2*/bin; do
        [[ -x $d/go ]] && PATH="$d:$PATH"
    done
    go_is_usable && return 0
    command -v apt-get >/dev/null 2>&1 || die "no Go >= 1.21 found and no apt-get to install one; install Go and re-run"
    [[ $(id -u) == 0 ]] || die "no Go >= 1.21 found; re-run as root to let this script install it with apt-get, or install Go"
    # Debian bookworm's own golang is 1.19; bookworm-backports carries newer ones. Use the
    # mirror the machine already uses, never a host name of our own.
    local mirror
    mirror=$(sed -n -E 's/^URIs:[[:space:]]*([^[:space:]]+).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1 || true)
    if [[ -n $mirror ]] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports from $mirror to the apt sources"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" >/etc/apt/sources.list.d/tidepool-backports.sources
    fi
    log "installing Go with apt-get"
    apt-get update -qq >&2
    local pkg
    pkg=$(apt-cache search --names-only '^golang-1\.[0-9]+-go$' | cut -d' ' -f1 | sort -V | tail -n1)
    [[ -n $pkg ]] || die "apt has no golang-1.N-go package"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >&2
    PATH="/usr/lib/${pkg%-go}/bin:$PATH"
    go_is_usable || die "installed $pkg but it is older than Go 1.21"
}
ensure_go
# A Go older than a go.mod's `go` line fetches the right toolchain as a Go module.
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto} CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false"
log "using $(go version)"

# --- wrapper modules -------------------------------------------------------------------
# k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
# ./staging/src/...; a module that depends on it must replace each with its published
# v0.<minor>.<patch>. Read the list from that go.mod rather than keeping it by hand.
update_modules() {
    local gomod
    log "reading the staging module list from k8s.io/kubernetes@$K8S_VERSION's go.mod"
    gomod=$(cd "$HERE/kube" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
        sed -n -E 's/^[[:space:]]*"GoMod": "(.*)",?$/\1/p')
    [[ -f $gomod ]] || die "go mod download did not report the go.mod of k8s.io/kubernetes@$K8S_VERSION"
    local staging=() m
    mapfile -t staging < <(sed -n -E 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+) => \./staging/.*#\1#p' "$gomod")
    ((${#staging[@]} > 10)) || die "found only ${#staging[@]} staging modules in $gomod"
    local args=()
    for m in "${staging[@]}"; do args+=("-replace=$m=$m@$STAGING_VERSION"); done
    (cd "$HERE/kube" && go mod edit "${args[@]}")
    log "replaced ${#staging[@]} staging modules with $STAGING_VERSION; running go mod tidy (kube)"
    (cd "$HERE/kube" && go mod tidy)
    log "running go mod tidy (etcd)"
    (cd "$HERE/etcd" && go mod tidy)
}

if [[ $mode == update || ! -f $HERE/kube/go.sum || ! -f $HERE/etcd/go.sum ]]; then
    update_modules
    # go.mod/go.sum changed: so did the cache key.
    VERSION_DIR="$CACHE_ROOT/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$(cache_key)"
    BIN_DIR="$VERSION_DIR/bin"
    [[ $mode == update ]] && { log "modules updated; the next build goes to $BIN_DIR"; exit 0; }
fi

# --- build -----------------------------------------------------------------------------
mkdir -p "$CACHE_ROOT"
# Several test binaries (or people) may ask at once: one builds, the others wait.
exec 9>"$CACHE_ROOT/.build.lock"
if ! flock -n 9; then
    log "another build holds $CACHE_ROOT/.build.lock; waiting"
    flock 9
fi
if all_present; then
    log "cached: $BIN_DIR"
    echo "$BIN_DIR"
    exit 0
fi

STAGE="$VERSION_DIR/bin.partial"
rm -rf "$STAGE"
mkdir -p "$STAGE"
started=$SECONDS

if [[ ! -x $BIN_DIR/kube-apiserver || ! -x $BIN_DIR/kubectl ]]; then
    log "building kube-apiserver and kubectl $K8S_VERSION (cold: 10-20 min on 2 cores)"
    (cd "$HERE/kube" && go build -trimpath -ldflags "$K8S_LDFLAGS" -o "$STAGE/" \
        k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
else
    cp "$BIN_DIR/kube-apiserver" "$BIN_DIR/kubectl" "$STAGE/"
fi
if [[ ! -x $BIN_DIR/etcd ]]; then
    log "building etcd $ETCD_VERSION"
    (cd "$HERE/etcd" && go build -trimpath -ldflags "-s -w" -o "$STAGE/etcd" go.etcd.io/etcd/server/v3)
else
    cp "$BIN_DIR/etcd" "$STAGE/"
fi
if [[ ! -x $BIN_DIR/helm ]]; then
    log "building helm $HELM_VERSION (go install)"
    # Outside any module, so go install resolves helm's own go.mod.
    (cd "$STAGE" && GOBIN="$STAGE" go install -trimpath -ldflags "$HELM_LDFLAGS" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
else
    cp "$BIN_DIR/helm" "$STAGE/"
fi

for b in "${BINARIES[@]}"; do [[ -x $STAGE/$b ]] || die "build produced no $b"; done
"$STAGE/kube-apiserver" --version >&2
# sed, not head: head would exit early and SIGPIPE etcd, failing the pipeline (pipefail).
"$STAGE/etcd" --version | sed -n 1p >&2
rm -rf "$BIN_DIR"
mv "$STAGE" "$BIN_DIR"
log "built in $((SECONDS - started)) s: $BIN_DIR"
echo "$BIN_DIR"
