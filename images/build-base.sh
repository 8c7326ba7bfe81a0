#!/bin/sh
# Build the harness base image offline: a minimal Debian made with debootstrap
# and imported into a container engine, for hosts that cannot pull
# debian:bookworm-slim (no registry, air-gapped networks). Only a Debian
# package mirror is needed.
#
#   images/build-base.sh ENGINE REF [SUITE] [MIRROR]
#
#   ENGINE  docker | podman
#   REF     the image reference to create, e.g. localhost/harness-base:bookworm
#   SUITE   Debian suite (default: bookworm)
#   MIRROR  Debian mirror URL (default: http://deb.debian.org/debian)
#
# Progress goes to stderr; stdout carries only REF, on the last line, so
# `ref=$(images/build-base.sh docker localhost/harness-base:bookworm)` works.
# Must run as root: debootstrap creates device nodes and chroots.
# TMPDIR (default /var/tmp) must allow exec and device nodes and hold ~250 MB.
set -eu

die() {
    echo "build-base.sh: $*" >&2
    exit 1
}

if [ $# -lt 2 ] || [ $# -gt 4 ]; then
    die "usage: $0 ENGINE REF [SUITE] [MIRROR]   (ENGINE: docker or podman)"
fi
ENGINE=$1
REF=$2
SUITE=${3:-bookworm}
MIRROR=${4:-http://deb.debian.org/debian}

case "$ENGINE" in
    docker | podman) ;;
    *) die "unknown engine '$ENGINE'; use docker or podman" ;;
esac
[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap creates device nodes and chroots); run: sudo $0 $*"
command -v debootstrap >/dev/null 2>&1 || die "debootstrap is not installed; install it with: apt-get install debootstrap"
command -v "$ENGINE" >/dev/null 2>&1 || die "$ENGINE is not installed or not on PATH"

ROOTFS=$(mktemp -d "${TMPDIR:-/var/tmp}/harness-base.XXXXXXXX")

cleanup() {
    status=$?
    # debootstrap mounts /proc and /sys inside the target and may leave them
    # behind when it fails: unmount everything below ROOTFS (deepest first)
    # before removing, and never let rm cross into another file system.
    awk -v root="$ROOTFS" 'index($2, root "/") == 1 { print $2 }' /proc/mounts |
        sort -r | while read -r mnt; do umount -l "$mnt" 2>/dev/null || true; done
    rm -rf --one-file-system "$ROOTFS"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "build-base.sh: debootstrap --variant=minbase $SUITE from $MIRROR into $ROOTFS" >&2
debootstrap --variant=minbase "$SUITE" "$ROOTFS" "$MIRROR" >&2

# Make the result match debian:*-slim, so the Dockerfile behaves the same on
# either base: no docs, man pages or locales from later installs (copyright
# files stay), no host identity, no package caches.
cat >"$ROOTFS/etc/dpkg/dpkg.cfg.d/harness-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
find "$ROOTFS/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
rm -rf "$ROOTFS/usr/share/man/"* "$ROOTFS/usr/share/info/"* "$ROOTFS/usr/share/locale/"*
rm -rf "$ROOTFS/var/lib/apt/lists/"* "$ROOTFS/var/cache/apt/archives/"*.deb "$ROOTFS/var/log/"*.log
: >"$ROOTFS/etc/resolv.conf"
rm -f "$ROOTFS/etc/hostname"

echo "build-base.sh: importing into $ENGINE as $REF" >&2
# --numeric-owner: ids in the image must not be remapped through the host's
# /etc/passwd. The engine prints the new image id; keep stdout for REF alone.
tar --numeric-owner -C "$ROOTFS" -c . |
    "$ENGINE" import \
        --change 'CMD ["bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL io.harness.image=base" \
        - "$REF" >&2

echo "$REF"
