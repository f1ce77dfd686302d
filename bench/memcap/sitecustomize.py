"""Cap every torchrun worker's GPU memory at BIOMED_MEM_CAP_GIB (an 80 GB card's budget on a bigger one).

On PYTHONPATH only for the capped bench run: Python imports `sitecustomize` at start, before the
CLI, so the real `biomed-llama pretrain` path runs unchanged under the cap. Workers only (torchrun
sets LOCAL_RANK for them); `torch.cuda.set_per_process_memory_fraction` makes the caching
allocator fail (after freeing its cache) past the cap, as a smaller card would.
"""

import os

if os.environ.get("BIOMED_MEM_CAP_GIB") and "LOCAL_RANK" in os.environ:
    import torch

    if torch.cuda.is_available():
        _dev = int(os.environ["LOCAL_RANK"])
        _total = torch.cuda.get_device_properties(_dev).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(os.environ["BIOMED_MEM_CAP_GIB"]) * 2**30 / _total), _dev)
