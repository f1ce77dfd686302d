#!/usr/bin/env bash
# Fill .whl/ with exactly the wheels bench/screen.sh and bench/accept.sh need on the GPU machine
# (Python 3.12, torch 2.11.0+cu130, triton and transformers are already there), and .bench/ with the
# shared anchors; both are ignored by git (added to info/exclude here) and named in the device call's
# `carry`. Run it here, in the repository root, before the calls:
#     bash bench/device_wheels.sh            # ANCHORS=/work/shared/bench by default
# Wheels: the CLI's pydantic stack (the versions of requirements/cuda.lock), liger-kernel 0.8.5 (pure
# Python + Triton) and xformers 0.0.35 (its extension is built for torch 2.10 and does not load there;
# its PyTorch-kernel operators do, see biomed_llama/model/attention.py). About 7 MB.
# WHEELS=e2e: instead, the wheels of requirements/e2e-wheels.txt, what bench/e2e.sh's pipeline (DVC, the
# stages, lm-eval) imports that the GPU machine lacks; the compiled ones as cp312 manylinux wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$EXCLUDE")"
for d in /.whl/ /.bench/; do grep -qxF "$d" "$EXCLUDE" 2> /dev/null || echo "$d" >> "$EXCLUDE"; done
rm -rf .whl && mkdir .whl
SDIST=()
if [ "${WHEELS:-}" = e2e ]; then
  # a pin marked `# sdist` has no wheel on PyPI: built here (pure Python, so the wheel fits any machine)
  mapfile -t PKGS < <(grep -vE '^\s*(#|$)' requirements/e2e-wheels.txt | grep -v '# sdist' | sed 's/ *#.*//')
  mapfile -t SDIST < <(grep '# sdist' requirements/e2e-wheels.txt | grep -v '^#' | sed 's/ *#.*//')
else
  PKGS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        liger-kernel==0.8.5 xformers==0.0.35)
fi
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${PKGS[@]}"
[ ${#SDIST[@]} = 0 ] || "$PY" -m pip wheel -q --no-deps -w .whl "${SDIST[@]}"
mkdir -p .bench
cp "${ANCHORS:-/work/shared/bench}"/anchor_*.py .bench/
ls -la .whl .bench
du -sh .whl .bench
