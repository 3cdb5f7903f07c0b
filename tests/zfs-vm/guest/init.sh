#!/bin/bash
# Tidepool VM init (PID 1), run by the image's /sbin/tidepool-init from the 9p share
# "tidepool-guest" (this directory, read-only). That stage has mounted /proc, /sys, /dev, /run.
#
# Kernel command line parameters it reads:
#   tidepool.exec_port=N   TCP port of the exec server (default 7000)
#   tidepool.host_share=1  mount the 9p share "tidepool-host" read-only at /host
# Prints "TIDEPOOL-READY" on the console once the exec server is about to listen.
set -u
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

log() { echo "tidepool-init: $*" >&2; }
t0=$(cut -d' ' -f1 /proc/uptime)

exec_port=7000
host_share=0
for arg in $(cat /proc/cmdline); do
  case $arg in
  tidepool.exec_port=*) exec_port=${arg#*=} ;;
  tidepool.host_share=*) host_share=${arg#*=} ;;
  esac
done

# Loading zfs is the slowest step of the boot (its init benchmarks checksum and raidz
# implementations, slow under TCG); let it run while the rest is set up.
modprobe zfs &
zfs_loader=$!

mkdir -p /dev/pts /dev/shm
mount -t devpts -o gid=5,mode=620 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -o remount,rw /
hostname tidepool-zfs-vm

if [[ $host_share == 1 ]]; then
  mkdir -p /host
  # A large msize makes reading big binaries over 9p several times faster.
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 tidepool-host /host ||
    log "cannot mount the tidepool-host share"
fi

# Only loopback and the qemu user-mode link; deliberately no default route, so nothing in
# the guest reaches beyond qemu (the host's loopback is reachable as 10.0.2.2).
modprobe virtio_net
ip link set lo up
nic=$(ls /sys/class/net | grep -v '^lo$' | head -n1)
if [[ -n $nic ]]; then
  ip link set "$nic" up
  ip addr add 10.0.2.15/24 dev "$nic"
else
  log "no network interface"
fi

if ! wait "$zfs_loader"; then
  log "modprobe zfs failed"
  exit 1
fi
log "zfs $(cat /sys/module/zfs/version 2>/dev/null) loaded, init took $(awk -v t0="$t0" '{print $1 - t0}' /proc/uptime) s (uptime $(cut -d' ' -f1 /proc/uptime) s)"

mkdir -p /var/tmp/tidepool
# The exec server is restarted if it dies; its connections are independent.
(
  while :; do
    python3 -u /run/tidepool-guest/exec-server.py --port "$exec_port"
    log "exec server exited with $?; restarting"
    sleep 1
  done
) &
echo "TIDEPOOL-READY" >/dev/console

# PID 1 must stay alive and reap orphans (bash reaps any child on SIGCHLD).
while :; do
  sleep 3600 &
  wait $!
done
