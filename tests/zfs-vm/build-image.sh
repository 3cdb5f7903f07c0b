#!/usr/bin/env bash
# Builds, once, the VM image that gives Tidepool's tests real OpenZFS 2.3: Debian bookworm
# (minbase) with the bookworm-backports kernel, zfs-dkms and zfsutils-linux, the zfs module
# built by DKMS for that kernel. See shared/INFRA.md, "OpenZFS 2.3 in a VM (verified)".
#
# Output: the image directory, alone on stdout (logs go to stderr). It holds
#   vmlinuz, initrd.img, root.img (ext4, raw, sparse), manifest (kernel and zfs versions).
#
# Two cached stages under ${TIDEPOOL_CACHE:-$HOME/.cache/tidepool}/zfs-vm/:
#   base-<key>/rootfs.tar.zst  debootstrap + kernel + zfs-dkms built by DKMS: slow (10-40 min
#                              on 2 cores, depending on what else runs). Key: BASE_VERSION and
#                              a hash of the base recipe (between the "base recipe" markers).
#   img-<key>/                 the bootable image made from the base: tweaks for a fast boot
#                              (small initramfs, uncompressed zfs modules), stage-one init,
#                              mkfs. About a minute. Key: IMAGE_VERSION and a hash of the script.
# So an edit outside the base recipe rebuilds only the image. Comment-only edits rebuild
# nothing. A warm run only checks that the directory and qemu exist.
#
# The guest's init and exec server are NOT baked in: the image's /sbin/tidepool-init mounts
# tests/zfs-vm/guest/ over 9p and runs init.sh from there, so editing them needs no rebuild.
#
# Needs root (apt-get, debootstrap, chroot). The Debian mirror is read from this machine's
# apt sources at run time; none is written here.
set -euo pipefail

# Bump when a stage must be rebuilt for a reason the hashes do not see (they see edits).
BASE_VERSION=1
IMAGE_VERSION=1
# The smallest OpenZFS the tests accept.
MIN_ZFS=2.3

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${TIDEPOOL_CACHE:-$HOME/.cache/tidepool}/zfs-vm
# Hashes ignore comment lines, so comment-only edits keep the keys.
code_hash() { grep -v '^[[:space:]]*#' | sha256sum | cut -c1-12; }
base_key="base-v${BASE_VERSION}-$(sed -n '/^# >>> base recipe/,/^# <<< base recipe/p' "$here/build-image.sh" | code_hash)"
key="img-v${IMAGE_VERSION}-$(code_hash <"$here/build-image.sh")"
base=$cache_root/$base_key
out=$cache_root/$key

log() { printf '[zfs-vm build %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# Prints "URI KEYRING" of the machine's own Debian source for bookworm (deb822 or one-line).
debian_mirror() {
  local f
  shopt -s nullglob
  for f in /etc/apt/sources.list.d/*.sources; do
    awk '
      function flush() {
        if (uris != "" && suites ~ /(^| )bookworm( |$)/) { print uris, (keyring == "" ? "-" : keyring); found = 1; exit }
        uris = ""; suites = ""; keyring = ""
      }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "uris:" { uris = $2 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 " " }
      tolower($1) == "signed-by:" { keyring = $2 }
      END { if (!found) flush() }
    ' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk '
      $1 == "deb" {
        kr = "-"; i = 2
        if ($2 ~ /^\[/) {
          for (; i <= NF; i++) { if ($i ~ /signed-by=/) { kr = $i; sub(/.*signed-by=/, "", kr); sub(/\].*/, "", kr) } if ($i ~ /\]$/) { i++; break } }
        }
        if ($(i + 1) == "bookworm") { print $i, kr; exit }
      }
    ' "$f"
  done
}

read_mirror() {
  local line
  line=$(debian_mirror | head -n1)
  [[ -n $line ]] || die "no Debian bookworm source found in /etc/apt/sources.list{,.d/*}"
  mirror=${line%% *}
  keyring=${line#* }
  [[ $keyring != - ]] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
}

# qemu-system-x86 must come from bookworm-backports, like qemu-utils may already have
# (mixing them makes apt report broken packages).
ensure_host_packages() {
  local want=("$@") missing=() cmd pkg
  for pair in "${want[@]}"; do
    cmd=${pair%%:*} pkg=${pair#*:}
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  [[ $(id -u) == 0 ]] || die "missing ${missing[*]} and not root: cannot apt-get install"
  read_mirror
  if ! grep -qs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; then
    log "adding bookworm-backports (main contrib) from the machine's own Debian mirror"
    cat >/etc/apt/sources.list.d/tidepool-bookworm-backports.sources <<EOF
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main contrib
Signed-By: $keyring
EOF
  fi
  log "installing host packages: ${missing[*]}"
  apt-get update -q >&2
  # e2fsprogs and debootstrap come along from backports too, as the verified recipe did.
  apt-get install -y -q --no-install-recommends -t bookworm-backports \
    "${missing[@]}" debootstrap e2fsprogs >&2
}

qemu_ok() { command -v qemu-system-x86_64 >/dev/null 2>&1; }

# Fast path: cached and runnable.
if [[ -f $out/READY ]] && qemu_ok; then
  echo "$out"
  exit 0
fi

mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
if ! flock -n 9; then
  log "another build holds $cache_root/.lock; waiting"
  flock 9
fi

ensure_host_packages qemu-system-x86_64:qemu-system-x86
if [[ -f $out/READY ]]; then
  echo "$out"
  exit 0
fi

t_start=$SECONDS
phase_start=$SECONDS
timings=()
phase_done() {
  timings+=("$1=$((SECONDS - phase_start))s")
  log "$1 done in $((SECONDS - phase_start)) s"
  phase_start=$SECONDS
}

# Virtual file systems mounted into the chroot; unmounted before anything is removed so a
# cleanup can never recurse into the host's /proc or /sys.
chroot_mounts=()
mount_chroot() {
  mount -t proc proc "$root/proc"
  chroot_mounts+=("$root/proc")
  mount -t sysfs sysfs "$root/sys"
  chroot_mounts+=("$root/sys")
}
umount_all() {
  local m i
  for ((i = ${#chroot_mounts[@]} - 1; i >= 0; i--)); do
    m=${chroot_mounts[i]}
    if mountpoint -q "$m"; then umount "$m" || umount -l "$m" || true; fi
  done
  chroot_mounts=()
}
safe_rm() {
  local dir=$1
  [[ -d $dir ]] || return 0
  if findmnt -rn -o TARGET | grep -q "^$dir/"; then
    log "not removing $dir: something is still mounted under it"
    return 0
  fi
  rm -rf --one-file-system "$dir"
}
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }

# Leftovers of interrupted builds (we hold the lock, so none is running).
for stale in "$cache_root"/.build-*; do
  [[ -d $stale ]] || continue
  for m in proc sys; do
    if mountpoint -q "$stale/root/$m"; then umount -l "$stale/root/$m"; fi
  done
  safe_rm "$stale"
done

work=$(mktemp -d "$cache_root/.build-XXXXXX")
root=$work/root
trap 'umount_all; safe_rm "$work"' EXIT

# >>> base recipe (edits here rebuild the base: tens of minutes)
build_base() {
  ensure_host_packages debootstrap:debootstrap zstd:zstd
  read_mirror
  log "building $base_key in $work (mirror from apt sources)"
  debootstrap --variant=minbase --keyring="$keyring" \
    --include=kmod,udev,iproute2,ca-certificates,python3,procps \
    bookworm "$root" "$mirror" >&2
  phase_done debootstrap

  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates bookworm-backports
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  # No service starts during package installation inside the chroot.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  mount_chroot

  in_root apt-get update -q >&2
  in_root apt-get install -y -q -t bookworm-backports linux-image-amd64 linux-headers-amd64 >&2
  phase_done kernel
  # zfs-dkms's postinst builds the module for the newest installed kernel (the guest's).
  in_root apt-get install -y -q -t bookworm-backports zfs-dkms zfsutils-linux >&2
  phase_done zfs-packages

  local kver zfs_pkg zfs_ver
  kver=$(find "$root/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n1)
  [[ -n $kver && -f $root/boot/vmlinuz-$kver ]] || die "no kernel found in the chroot"
  zfs_pkg=$(in_root dpkg-query -W -f '${Version}' zfs-dkms)
  zfs_ver=${zfs_pkg%%-*}
  zfs_ver=${zfs_ver#*:}
  if [[ $(printf '%s\n%s\n' "$MIN_ZFS" "$zfs_ver" | sort -V | head -n1) != "$MIN_ZFS" ]]; then
    die "zfs-dkms $zfs_pkg is older than $MIN_ZFS"
  fi
  log "kernel $kver, zfs-dkms $zfs_pkg"
  # DKMS targets the host's kernel inside a chroot; make sure the guest kernel has it.
  if ! compgen -G "$root/lib/modules/$kver/updates/dkms/zfs.ko*" >/dev/null; then
    in_root dkms install "zfs/$zfs_ver" -k "$kver" >&2
  fi
  compgen -G "$root/lib/modules/$kver/updates/dkms/zfs.ko*" >/dev/null ||
    die "dkms produced no zfs module for $kver"
  phase_done dkms

  in_root apt-get clean
  rm -rf "$root"/var/lib/apt/lists/* "$root/var/lib/dkms/zfs/$zfs_ver/build"
  umount_all
  printf 'kernel=%s\nzfs_dkms=%s\n' "$kver" "$zfs_pkg" >"$work/base-manifest"
  tar -C "$root" --numeric-owner --xattrs -cf - . | zstd -q -T0 -3 >"$work/rootfs.tar.zst"
  safe_rm "$root"
  phase_done base-archive
  cat >>"$work/base-manifest" <<EOF
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
timings=${timings[*]}
EOF
  touch "$work/READY"
  mv "$work" "$base"
  work=$(mktemp -d "$cache_root/.build-XXXXXX")
  root=$work/root
}
# <<< base recipe

if [[ ! -f $base/READY ]]; then
  build_base
fi

# The image: the base plus what makes it boot fast under TCG.
log "making $key from $base_key"
ensure_host_packages mkfs.ext4:e2fsprogs zstd:zstd xz:xz-utils
mkdir -p "$root"
zstd -q -d -c "$base/rootfs.tar.zst" | tar -C "$root" --numeric-owner --xattrs -xf -
kver=$(sed -n 's/^kernel=//p' "$base/base-manifest")
zfs_pkg=$(sed -n 's/^zfs_dkms=//p' "$base/base-manifest")
mount_chroot

# OpenSSH for the ssh-target tests: a far host's sshd and the source agent's client.
# The tests start sshd themselves, with host keys of their own; none ships in the image.
in_root apt-get update -q >&2
in_root apt-get install -y -q --no-install-recommends openssh-server openssh-client >&2
in_root apt-get clean
rm -rf "$root"/var/lib/apt/lists/* "$root"/etc/ssh/ssh_host_*

# A small initramfs: unpacking Debian's default one (32 MB, MODULES=most) and letting its
# udev load every driver took about 25 s of a TCG boot. virtio_pci is built in.
cat >"$root/etc/initramfs-tools/conf.d/tidepool" <<'EOF'
MODULES=list
EOF
printf '%s\n' virtio_blk ext4 >"$root/etc/initramfs-tools/modules"
in_root update-initramfs -u -k "$kver" >&2

# Uncompressed zfs modules: no xz decompression under TCG at every modprobe.
for ko in "$root/lib/modules/$kver/updates/dkms/"*.ko.xz; do
  [[ -e $ko ]] || continue
  xz -d "$ko"
done
in_root depmod -a "$kver"
umount_all

# Stage-one init: everything else comes from tests/zfs-vm/guest over 9p at boot.
cat >"$root/sbin/tidepool-init" <<'EOF'
#!/bin/bash
# Tidepool VM stage-one init: mount the guest share (tests/zfs-vm/guest) and run its init.sh.
# If anything fails PID 1 exits, the kernel panics and (panic=-1, -no-reboot) qemu exits.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# The initramfs has moved /proc, /sys, /dev and /run over already; mount what is missing.
mountpoint -q /proc || mount -t proc proc /proc
mountpoint -q /sys || mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mountpoint -q /run || mount -t tmpfs -o mode=755 tmpfs /run
modprobe 9pnet_virtio && modprobe 9p || { echo "tidepool-init: 9p modules missing" >&2; exit 1; }
mkdir -p /run/tidepool-guest
mount -t 9p -o trans=virtio,version=9p2000.L,ro tidepool-guest /run/tidepool-guest ||
  { echo "tidepool-init: cannot mount the tidepool-guest share" >&2; exit 1; }
exec /bin/bash /run/tidepool-guest/init.sh
EOF
chmod 755 "$root/sbin/tidepool-init"
echo tidepool-zfs-vm >"$root/etc/hostname"
mkdir -p "$root/host"

cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"
mkfs.ext4 -q -F -L tidepool-root -d "$root" "$work/root.img" 6G
safe_rm "$root"
phase_done image

cat >"$work/manifest" <<EOF
key=$key
base=$base_key
kernel=$kver
zfs_dkms=$zfs_pkg
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
timings=${timings[*]} total=$((SECONDS - t_start))s
EOF
touch "$work/READY"
# Atomic publish: the image directory either does not exist or is complete.
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
# Older images are cheap to remake from their base; keep only the current one.
for old in "$cache_root"/img-*; do
  [[ $old == "$out" ]] || safe_rm "$old"
done
log "made $out in $((SECONDS - t_start)) s (${timings[*]})"
echo "$out"
