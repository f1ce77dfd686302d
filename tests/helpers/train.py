"""Helpers of the train tests: a synthetic token store, tiny-model params, the torchrun runner.

The token store is written by `biomed_llama.testing` through the package's own `TokenWriter` and
manifest, as the tokenize stage writes it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from biomed_llama.testing import BOS_ID, EOS_ID, write_token_stores
from tests.helpers import REPO

TOKENIZER = REPO / "data" / "sample" / "tokenizer"
BOS, EOS = BOS_ID, EOS_ID  # the special ids of make_tokens' stores, as the tests read them (`H.BOS`)


def make_tokens(root: Path, n_docs: int = 80, seed: int = 0, min_len: int = 3, max_len: int = 70) -> Path:
    """Two subsets of random documents (ids 3..999, varied lengths, each + EOS, vocabulary 4096) with a
    manifest; returns `root`. tests/reference/pretrain_losses.json pins losses on these bytes."""
    rng = np.random.default_rng(seed)
    stores = {}
    for k, slug in enumerate(["pubmed_abstracts", "pubmed_central"]):
        stores[(slug, "train")] = [rng.integers(3, 1000, size=int(rng.integers(min_len, max_len)))
                                   for _ in range(n_docs // 2 + k)]
    return write_token_stores(root, stores, vocab_size=4096, params={"test": True})


def tiny_params(tmp: Path, tokens: Path, **pretrain: Any) -> dict[str, Any]:
    """Raw params dict of a tiny fp32 CPU run writing everything under `tmp`.

    `pretrain` overrides its `pretrain` section; optimiser keys (`lr=…`) go into `pretrain.optim`.
    """
    from biomed_llama.train.config import OptimConfig

    p = {
        "seed": 7,
        "model": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
                  "max_position_embeddings": 64},
        "pretrain": {
            "tokens": str(tokens), "tokenizer": str(TOKENIZER), "max_seq_length": 32, "packing": "concat",
            "global_batch_size": 4, "micro_batch_size": 2, "max_steps": 6, "optim": {"lr": 3e-3, "warmup_ratio": 0.2},
            "device": "cpu", "checkpoint_every": 100, "keep_checkpoints": 2, "progress": False, "log_every": 1,
            "export_init": None,  # the demo's default exports the init into models/base: never from a test
            "checkpoint_dir": str(tmp / "ckpt"), "output": str(tmp / "model"),
            "metrics": str(tmp / "metrics.json"), "plots": str(tmp / "plots"),
        },
    }
    for key, value in pretrain.items():
        (p["pretrain"]["optim"] if key in OptimConfig.model_fields else p["pretrain"])[key] = value
    return p


def validate(raw: dict[str, Any]):
    """Params object from a raw dict."""
    from biomed_llama.config import validate_params

    return validate_params(raw, "test")


def env_for_subprocess() -> dict[str, str]:
    """Environment of spawned trainers: one thread each (2 shared cores), the repo importable."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO))
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def write_params_file(path: Path, raw: dict[str, Any]) -> Path:
    """Write params YAML for the CLI."""
    import yaml

    path.write_text(yaml.safe_dump(raw))
    return path


def torchrun(nproc: int, params_file: Path, *extra: str, timeout: int = 240) -> subprocess.CompletedProcess:
    """Run `torchrun --standalone --nproc-per-node N -m biomed_llama pretrain --params FILE` and return it."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "biomed_llama", "pretrain", "--params", str(params_file), *extra]
    return subprocess.run(cmd, env=env_for_subprocess(), cwd=REPO, capture_output=True, text=True, timeout=timeout)


def run_dirs(root: Path) -> list[Path]:
    """The run folders (`<run_id>/`) under a checkpoint_dir."""
    return sorted(p for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []


def run_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of the one run folder under `root` (asserts there is exactly one)."""
    from biomed_llama.train.checkpoint import list_checkpoints

    (only,) = run_dirs(root)
    return list_checkpoints(only)


def tree_digest(folder: Path) -> dict[str, tuple[int, str]]:
    """rel path → (mtime_ns, sha256) of every file under `folder`: equal iff nothing was touched."""
    from biomed_llama.fsutil import sha256_file

    return {p.relative_to(folder).as_posix(): (p.stat().st_mtime_ns, sha256_file(p))
            for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def curve(folder: Path) -> list[float]:
    """The losses of a run's loss-curve folder (`plots`), in step order."""
    from biomed_llama.train.metrics import read_loss_curve

    return [r["loss"] for r in read_loss_curve(folder)]


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 120) -> list[str]:
    """Read `proc`'s stdout until a line contains `needle`; return the lines read (AssertionError on timeout or exit)."""
    lines, t0 = [], time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        lines.append(line)
        if needle in line:
            return lines
    raise AssertionError(f"never saw {needle!r}: {''.join(lines)}{proc.stderr.read()[-2000:]}")


def weights(folder: Path) -> dict:
    """name → tensor of every safetensors file of a HF model folder."""
    from safetensors.torch import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(f).items()}
