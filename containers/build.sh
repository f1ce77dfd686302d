#!/usr/bin/env bash
# `make image`: the CPU twin of the production image, built here with podman from the same
# recipe (containers/Dockerfile) on a Debian 12 base bootstrapped here (containers/base.sh),
# with requirements/cpu.lock hash-checked (--require-hashes). Run from the repository root after
# the package wheel is in dist/. Writes build/image/build.json (image, base, times, size).
#   IMAGE (default localhost/biomed-llama:cpu)   the tag
#   LOCK  (default cpu.lock)                     the lock under requirements/
#   TWIN_WHEELS (default: first of $PIP_FIND_LINKS, else /opt/wheels)   the CPU torch wheel's folder
set -euo pipefail
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/containers/containers.conf}
IMAGE=${IMAGE:-localhost/biomed-llama:cpu}
LOCK=${LOCK:-cpu.lock}
links=${PIP_FIND_LINKS:-/opt/wheels}
TWIN_WHEELS=${TWIN_WHEELS:-${links%% *}}
CA=${TWIN_CA:-/etc/ssl/certs/ca-certificates.crt}
wheel=$(ls dist/biomed_llama-*-py3-none-any.whl)
version=$(basename "$wheel" | cut -d- -f2)
mkdir -p build/image

t0=$SECONDS
base=$(containers/base.sh)
t_base=$((SECONDS - t0))
t1=$SECONDS
# --network host: Debian's and PyPI's mirrors are reached as from the host; the CPU torch wheel,
# the CA bundle and the pip.conf naming both are bound in for the RUN steps only (not in the image).
podman build --network host -f containers/Dockerfile \
  -v "$TWIN_WHEELS:/wheels:ro" -v "$CA:/host-ca.crt:ro" -v "$PWD/containers/pip-twin.conf:/etc/pip.conf:ro" \
  --build-arg BASE="$base" --build-arg BASE_SHA256="${base##*:}" --build-arg LOCK="$LOCK" \
  --build-arg LOCK_SHA256="$(sha256sum "requirements/$LOCK" | cut -d' ' -f1)" \
  --build-arg VERSION="$version" --build-arg GIT_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unset)" \
  -t "$IMAGE" . >build/image/build.log 2>&1 \
  || { grep -v "WARNING: Location" build/image/build.log | tail -25 >&2; echo "make image: podman build failed (log: build/image/build.log)" >&2; exit 1; }
t_build=$((SECONDS - t1))
size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
printf '{"image": "%s", "base": "%s", "base_seconds": %d, "build_seconds": %d, "size_bytes": %s}\n' \
  "$IMAGE" "$base" "$t_base" "$t_build" "$size" >build/image/build.json
echo "make image: $IMAGE on $base (base ${t_base} s, build ${t_build} s, $((size / 1000000)) MB)"
