"""Cap every torchrun worker's GPU memory at BIOMED_MEM_CAP_GIB (`bench.memcap.cap_from_env`).

On PYTHONPATH only for the capped bench run (bench/lib.sh `capped`, which also has the repository root on
PYTHONPATH): Python imports `sitecustomize` at start, before the CLI, so the real `biomed-llama pretrain`
path runs unchanged under the cap. Workers only (torchrun sets LOCAL_RANK for them).
"""

import os

if os.environ.get("BIOMED_MEM_CAP_GIB") and "LOCAL_RANK" in os.environ:
    from bench.memcap import cap_from_env

    cap_from_env()
