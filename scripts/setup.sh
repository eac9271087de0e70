#!/usr/bin/env bash
# Installs what building TortoiseMQ needs on a fresh Debian machine: the LMDB library
# (Debian's liblmdb-dev), zlib (zlib1g-dev, for its CRC-32) and pkg-config; with --tests, also what the tests use. Swift
# itself must already be on the PATH.
set -euo pipefail
missing=()
dpkg -s liblmdb-dev >/dev/null 2>&1 || missing+=(liblmdb-dev)
dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
if [ "${1:-}" = "--tests" ]; then
    # The disk-failure tests put an ext4 file system on a loop device.
    [ -x /sbin/mkfs.ext4 ] && [ -x /usr/sbin/filefrag ] || missing+=(e2fsprogs)
    [ -x /sbin/losetup ] || missing+=(mount)
    [ -x /usr/bin/fallocate ] || missing+=(util-linux)
fi
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v swift >/dev/null 2>&1 || { echo "swift is not on the PATH: install the Swift 6 toolchain first" >&2; exit 1; }
