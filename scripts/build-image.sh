#!/usr/bin/env bash
# Builds the Tidepool image (Dockerfile) with buildah, without a Docker engine and without
# pulling anything: the base is made locally from Debian packages, the binary is the one
# built on this machine.
#
#   scripts/build-image.sh [--binary PATH] [--tag NAME:TAG]
#   scripts/build-image.sh --base-only    install the tools, make the base, build nothing
#
#   --binary  the `tidepool` binary to put in (default: cargo build --release -p tidepool)
#   --tag     the image name (default localhost/tidepool:<version of the binary>)
#
# Prints the image name on stdout (logs go to stderr). Cached under
# ${TIDEPOOL_CACHE:-~/.cache/tidepool}/image/: the base root (debootstrap once, about a
# minute cold, then only the few files the image needs, a few MB) and buildah's storage
# (vfs driver: works on any filesystem, as root, with no daemon). Installs debootstrap and
# buildah from the machine's own apt sources if missing; the Debian mirror for debootstrap
# is read from those sources, never written here. Needs root.
set -euo pipefail

# Bump to rebuild the base for a reason the recipe hash does not see.
BASE_VERSION=1
SUITE=bookworm

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${TIDEPOOL_CACHE:-$HOME/.cache/tidepool}/image
storage=(--root "$cache/storage" --runroot "$cache/run" --storage-driver vfs)

log() { printf '[build-image %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

binary="" tag="" base_only=""
while (($#)); do
  case $1 in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    --base-only) base_only=1; shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument $1 (try --help)" ;;
  esac
done
[[ $(id -u) == 0 ]] || die "needs root (debootstrap, buildah with chroot isolation)"

# The URI of this machine's own Debian source for $SUITE (deb822 or one-line format).
debian_mirror() {
  local f
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    awk -v suite="$SUITE" '
      /^[ \t]*$/ { if (uris != "" && found) { print uris; exit } uris = ""; found = 0; next }
      tolower($1) == "uris:" { uris = $2 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
      END { if (uris != "" && found) print uris }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++; if ($(i + 1) == suite) { print $i; exit } }' "$f"
  done
}

ensure_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v buildah >/dev/null || missing+=(buildah)
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]} (apt, from this machine's sources)"
  apt-get update -q >&2
  apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}

# >>> base recipe
# A debootstrap root, of which only what the image needs is kept: the dynamic loader and
# the libraries `tidepool` links (glibc, libgcc_s), dash as /bin/sh and coreutils' chroot
# for the zfs wrappers, CA certificates, OpenSSH's client with the libraries it links (an
# `ssh` replication target: the agent pipes zfs send through it), and the users root and
# nonroot (65532).
make_base_root() {
  local out=$1 mirror boot
  mirror=$(debian_mirror | head -n1)
  [[ -n $mirror ]] || die "no Debian $SUITE source in /etc/apt/sources.list{,.d/*}"
  boot=$(mktemp -d "$cache/debootstrap.XXXXXX")
  log "debootstrap --variant=minbase $SUITE (about a minute)"
  debootstrap --variant=minbase --include=ca-certificates,openssh-client "$SUITE" "$boot" "$mirror" >&2 \
    || die "debootstrap failed (see above)"
  local stage=$out.tmp
  rm -rf "$stage"
  mkdir -p "$stage"/{bin,etc/ssl/certs,lib64,lib/x86_64-linux-gnu,usr/sbin,tmp,host}
  chmod 1777 "$stage/tmp"
  cp -L "$boot/lib64/ld-linux-x86-64.so.2" "$stage/lib64/"
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1; do
    cp -L "$boot/lib/x86_64-linux-gnu/$lib" "$stage/lib/x86_64-linux-gnu/"
  done
  cp -L "$boot/bin/dash" "$stage/bin/sh"
  cp -L "$boot/usr/sbin/chroot" "$stage/usr/sbin/chroot"
  cp -L "$boot/etc/ssl/certs/ca-certificates.crt" "$stage/etc/ssl/certs/"
  mkdir -p "$stage/usr/bin"
  cp -L "$boot/usr/bin/ssh" "$stage/usr/bin/ssh"
  local lib
  for lib in $(chroot "$boot" ldd /usr/bin/ssh | grep -o '/[^ ]*\.so[^ ]*'); do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$boot$lib" "$stage$lib"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnonroot:x:65532:65532:nonroot:/nonexistent:/bin/false\n' >"$stage/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$stage/etc/group"
  rm -rf "$boot"
  mv "$stage" "$out"
}
# <<< base recipe

recipe_hash=$(sed -n '/^# >>> base recipe/,/^# <<< base recipe/p' "${BASH_SOURCE[0]}" \
  | grep -v '^[[:space:]]*#' | sha256sum | cut -c1-12)
base_key=v$BASE_VERSION-$recipe_hash
base_image=localhost/tidepool-base:$base_key

ensure_tools
mkdir -p "$cache"
if ! buildah "${storage[@]}" inspect --type image "$base_image" >/dev/null 2>&1; then
  root=$cache/base-$base_key
  [[ -d $root ]] || make_base_root "$root"
  log "committing $base_image"
  ctr=$(buildah "${storage[@]}" from scratch)
  buildah "${storage[@]}" copy "$ctr" "$root" / >/dev/null
  buildah "${storage[@]}" commit --quiet --rm "$ctr" "$base_image" >/dev/null
fi

if [[ -n $base_only ]]; then
  echo "$base_image"
  exit 0
fi

if [[ -z $binary ]]; then
  log "cargo build --release -p tidepool"
  (cd "$repo" && cargo build --release --locked -p tidepool --bin tidepool >&2)
  binary=${CARGO_TARGET_DIR:-$repo/target}/release/tidepool
fi
[[ -x $binary ]] || die "no executable binary at $binary"
version=$("$binary" --version | awk '{print $2}')
[[ -n $version ]] || die "$binary --version printed no version"
tag=${tag:-localhost/tidepool:$version}

# The context holds only what the Dockerfile copies. Debug info is stripped from the copy:
# the image needs none, and a debug build is mostly debug info.
context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
strip --strip-debug -o "$context/tidepool" "$binary"
cp -r "$repo/scripts/image/host-zfs" "$context/host-zfs"
log "building $tag from $base_image"
buildah "${storage[@]}" bud --quiet --pull=never --isolation chroot --layers=false \
  --build-arg "BASE=$base_image" -f "$repo/Dockerfile" -t "$tag" "$context" >&2
# A rebuilt tag leaves its previous image dangling; vfs keeps full copies, so drop them.
buildah "${storage[@]}" rmi --prune >/dev/null 2>&1 || true
echo "$tag"
