# One image, two modes: `tidepool controller` and `tidepool agent`.
#
# Built by scripts/build-image.sh with buildah (no Docker engine needed), from a context it
# stages: the `tidepool` binary built on the host, the zfs/zpool wrappers, and nothing
# fetched. BASE is a small root made locally from Debian (glibc, /bin/sh, chroot, CA
# certificates, users root and nonroot) and is never pulled.
#
# The default user is nonroot (65532): the controller needs no privilege. The agent's
# DaemonSet runs it as root, because /dev/zfs and the ZFS ioctls are root's; it runs the
# host's own zfs userland through the wrappers (chroot into the host root at /host), so the
# image carries no zfs of its own that could disagree with the host's kernel module.
ARG BASE=localhost/tidepool-base:latest
FROM ${BASE}
COPY tidepool /usr/local/bin/tidepool
COPY host-zfs/ /usr/local/lib/tidepool/host-zfs/
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tidepool"]
CMD ["--help"]
