#!/usr/bin/env bash
# The CPU twin's base: Debian bookworm (minbase) bootstrapped from the Debian mirror and imported
# into podman, because no image registry is reachable. Reused when a base of the same recipe
# (this file, suite, mirror) is already cached; a new recipe makes a new base.
#   containers/base.sh            → prints the base's image name, localhost/biomed-base:<sha256 of rootfs.tar>
# Its identity is the sha256 of the rootfs tarball (written next to it and in the image's label).
set -euo pipefail
SUITE=bookworm
MIRROR=${BIOMED_DEBIAN_MIRROR:-http://deb.debian.org/debian}
CACHE=${BIOMED_BASE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/biomed-llama/base}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$(cd "$(dirname "$0")" && pwd)/containers.conf}

key=$( { cat "$0"; echo "$SUITE $MIRROR"; } | sha256sum | cut -c1-16)
dir=$CACHE/$key
if [[ -s $dir/rootfs.sha256 && -s $dir/rootfs.tar ]]; then
  sha=$(cat "$dir/rootfs.sha256")
  name=localhost/biomed-base:$sha
  podman image exists "$name" || podman import -q "$dir/rootfs.tar" "$name" >/dev/null
  echo "$name"
  exit 0
fi

start=$SECONDS
rm -rf "$dir" && mkdir -p "$dir"
root=$dir/rootfs
debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$dir/debootstrap.log" 2>&1 \
  || { tail -20 "$dir/debootstrap.log" >&2; echo "base.sh: debootstrap failed (log: $dir/debootstrap.log)" >&2; exit 1; }
# What changes from one bootstrap to the next and is no part of the system: downloaded packages,
# package lists, logs and the debootstrap leftovers. Then a tarball in a fixed order and ownership.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/var/log/* "$root"/debootstrap
tar -C "$root" --sort=name --numeric-owner --xattrs -cf "$dir/rootfs.tar" .
rm -rf "$root"
sha=$(sha256sum "$dir/rootfs.tar" | cut -d' ' -f1)
name=localhost/biomed-base:$sha
podman import -q "$dir/rootfs.tar" "$name" >/dev/null
echo "$sha" >"$dir/rootfs.sha256"
echo "base.sh: bootstrapped $SUITE in $((SECONDS - start)) s, rootfs sha256 $sha" >&2
echo "$name"
