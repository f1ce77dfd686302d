#!/usr/bin/env bash
# Fill .whl/ with exactly the wheels bench/screen.sh and bench/accept.sh need on the GPU machine
# (Python 3.12, torch 2.11.0+cu130, triton and transformers are already there), and .bench/ with the
# shared anchors; both are ignored by git (added to info/exclude here) and named in the device call's
# `carry`. Run it here, in the repository root, before the calls:
#     bash bench/device_wheels.sh            # ANCHORS=/work/shared/bench by default
# Wheels: the CLI's pydantic stack (the versions of requirements/cuda.lock), liger-kernel 0.8.5 (pure
# Python + Triton) and xformers 0.0.35 (its extension is built for torch 2.10 and does not load there;
# its PyTorch-kernel operators do, see biomed_llama/model/attention.py); for issue 26 (bench/titan.sh):
# torchao 0.18.0 (float8 training; the release built for torch 2.11, the GPU machine's) and torchtitan 0.3.0 with
# what its training path imports that the machine lacks: tyro (+ docstring-parser, typeguard), torchdata
# (StatefulDataLoader), spmd_types (its default SPMD backend), datasets (+ dill, multiprocess; its validator module
# imports the HF loader at import time, though the anchor's synthetic loader never calls it). Not carried, as the
# anchor never imports them: wandb (logging off), torch_checkpointing (checkpoints off); tensorboard, einops,
# tokenizers, safetensors, pyarrow, pandas are on the machine already. About 17 MB in all.
# WHEELS=e2e: instead, the wheels of requirements/e2e-wheels.txt, what bench/e2e.sh's pipeline (DVC, the
# stages, lm-eval) imports that the GPU machine lacks; the compiled ones as cp312 manylinux wheels.
# WHEELS=all: the e2e set and issue 26's extras together (about 63 MB, under the 64 MiB a call carries), so that
# e2e.sh, bench_generate.sh and titan.sh run one after another on one warm machine with the same carry; the
# e2e set's datasets/dill/multiprocess (newer than the default set's) serve torchtitan too, which imports
# `datasets` only for its Hugging Face loader, never called by the synthetic-token anchor.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXCLUDE="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$EXCLUDE")"
for d in /.whl/ /.bench/; do grep -qxF "$d" "$EXCLUDE" 2> /dev/null || echo "$d" >> "$EXCLUDE"; done
rm -rf .whl && mkdir .whl
SDIST=()
TITAN_EXTRAS=(torchao==0.18.0 torchtitan==0.3.0 tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1
              torchdata==0.11.0 spmd_types==0.2.3 liger-kernel==0.8.5)
if [ "${WHEELS:-}" = e2e ] || [ "${WHEELS:-}" = all ]; then
  # a pin marked `# sdist` has no wheel on PyPI: built here (pure Python, so the wheel fits any machine)
  mapfile -t PKGS < <(grep -vE '^\s*(#|$)' requirements/e2e-wheels.txt | grep -v '# sdist' | sed 's/ *#.*//')
  mapfile -t SDIST < <(grep '# sdist' requirements/e2e-wheels.txt | grep -v '^#' | sed 's/ *#.*//')
  [ "${WHEELS:-}" = all ] && PKGS+=("${TITAN_EXTRAS[@]}")
else
  PKGS=(pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
        xformers==0.0.35 "${TITAN_EXTRAS[@]}" datasets==4.7.0 dill==0.4.0 multiprocess==0.70.18)
fi
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_24_x86_64 -d .whl "${PKGS[@]}"
[ ${#SDIST[@]} = 0 ] || "$PY" -m pip wheel -q --no-deps -w .whl "${SDIST[@]}"
mkdir -p .bench
cp "${ANCHORS:-/work/shared/bench}"/anchor_*.py .bench/
ls -la .whl .bench
du -sh .whl .bench
