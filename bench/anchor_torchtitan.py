"""torchtitan 0.3.0 as the speed anchor: LLaMA-7B (LLaMA-1/2 shape) trained by torchtitan's own Trainer.

The peer a user would pick instead of `biomed-llama pretrain` for FSDP2 LLaMA training. This file is a
torchtitan config module (`--module anchor_torchtitan --config llama7b`, found on PYTHONPATH): it registers a
LLaMA-7B flavour at run time and trains it on synthetic tokens with torchtitan's best settings, then prints one
JSON line with throughput, MFU and peak memory counted as `bench/bench_pretrain.py` counts them.

    TITAN_LAYERS=8 TITAN_MICRO=8 TITAN_ACC=2 torchrun --nproc-per-node 1 -m bench.anchor_torchtitan

The flavour: dim 4096, 32 heads (no GQA), FFN 11008 = torchtitan's `compute_ffn_hidden_dim(4096, multiple_of=256)`
(int(2·4·4096/3) = 10922, rounded up to a multiple of 256; LLaMA-1/2's own rule), vocab 32000, RoPE theta 10000 with
no frequency scaling (LLaMA-1/2; torchtitan's llama3 flavours use 500000 and "llama" scaling), sequence 2048,
TITAN_LAYERS layers (32 for the 7B; 16 on one H200, 8 on one H100). Everything else is torchtitan's own choice in
its llama3 configs: fused QKV projection, FlexAttention with the block-causal mask (one document per sequence here,
so plain causal attention; TITAN_ATTN=flex_flash or varlen for its other kernels) where the running torch can run
torchtitan 0.3.0's mask builder; on torch 2.11 it cannot (`flex_supported`), and the default is then its
ScaledDotProductAttention (TITAN_ATTN=sdpa: cuDNN SDPA, causal, the kernel our CLI's per-card setting uses), the chunked linear cross-entropy
(`ChunkedLossWrapper`; on torch 2.11 with its FSDP group of norm and LM head mended, `_mend_head_group`;
TITAN_LOSS=full for its plain `CrossEntropyLoss` over the whole logits), fused AdamW (betas 0.9/0.95, weight decay
0.1, as `default_adamw`), FSDP2 with bf16 parameters and fp32 reduction (parameters kept gathered from forward to
backward, TITAN_RESHARD=never, as our CLI's per-card setting; "default" is torchtitan's own policy), per-block
torch.compile of the model and the loss, CUDA graphs of the forward/backward (its 0.3.0 default), float8 off. Activation checkpointing: TITAN_AC = none (default), selective,
full, or budget:X (its MemoryBudgetAC, the compiler's recomputation budget, like our
`pretrain.activation_memory_budget`).

The data: the motif sequences of `bench_pretrain.MotifDataset` (a random 32-token motif repeated), one document a
sequence, so the loss moves. The tokenizer is a stand-in that only reports the vocabulary size (nothing reads text).

What is left out of torchtitan's training path, and why: no checkpoints (`checkpoint.enable` false, as a speed run
needs none), no validation, no profiler, no TensorBoard/W&B logging (their defaults are off; wandb is not installed
on the GPU machine and is never imported with logging off). HF `datasets` is carried because torchtitan's
validator module imports it at import time; the synthetic loader replaces the HF loader, so it is never called
(and if it does not import there, a stand-in that refuses to run takes its place: `_datasets_importable`).

Throughput: each `train_step` is timed (CUDA-synchronised) by a wrapper; tok/s per GPU = local tokens per step
over the mean step time after TITAN_WARMUP steps. MFU: 6·N(non-embedding) + 12·L·d·S FLOPs per token against
989 TFLOP/s, the formula of `biomed_llama.train.metrics` (torchtitan's own MFU, in its log, counts otherwise).
Peak memory: `torch.cuda.max_memory_allocated` and `max_memory_reserved` after the warm-up (what our CLI reports is
the allocated peak).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

SHAPE = {"dim": 4096, "n_heads": 32, "vocab": 32000, "seq": 2048, "multiple_of": 256, "rope_theta": 10000.0}


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def ffn_hidden_dim() -> int:
    """LLaMA-7B's FFN width by torchtitan's own rule (11008)."""
    from torchtitan.models.common import compute_ffn_hidden_dim

    return compute_ffn_hidden_dim(SHAPE["dim"], multiple_of=SHAPE["multiple_of"])


def flex_supported() -> bool:
    """Whether this torch's `create_block_mask` takes `separate_full_blocks`, which torchtitan 0.3.0's FlexAttention
    mask builder passes (models/common/attention.py:627). torch 2.11 (the GPU machine's) does not: the first anchor
    run there (one H100, 2026-12-07) failed with `TypeError: create_block_mask() got an unexpected keyword argument
    'separate_full_blocks'` at its first step."""
    import inspect

    from torch.nn.attention.flex_attention import create_block_mask

    return "separate_full_blocks" in inspect.signature(create_block_mask).parameters


def default_attention() -> str:
    """TITAN_ATTN, or torchtitan's own default (FlexAttention) where this torch can run it, else `sdpa`."""
    return os.environ.get("TITAN_ATTN") or ("flex" if flex_supported() else "sdpa")


def model_config(layers: int, attn_backend: str):
    """torchtitan's Llama3Model.Config of the LLaMA-7B shape with `layers` layers (built like its `_8b` flavour)."""
    from torchtitan.models.common import ComplexRoPE, Embedding, Linear, RMSNorm
    from torchtitan.models.llama3 import (
        _EMBEDDING_INIT,
        _NORM_INIT,
        _build_llama3_layers,
        _output_linear_init,
    )
    from torchtitan.models.llama3.model import Llama3Model

    dim, heads, vocab = SHAPE["dim"], SHAPE["n_heads"], SHAPE["vocab"]
    config = Llama3Model.Config(
        dim=dim,
        vocab_size=vocab,
        tok_embeddings=Embedding.Config(num_embeddings=vocab, embedding_dim=dim, param_init=_EMBEDDING_INIT),
        norm=RMSNorm.Config(normalized_shape=dim, param_init=_NORM_INIT),
        lm_head=Linear.Config(in_features=dim, out_features=vocab, param_init=_output_linear_init(dim)),
        layers=_build_llama3_layers(
            fuse_qkv=True, n_layers=layers, dim=dim, n_heads=heads, n_kv_heads=None, hidden_dim=ffn_hidden_dim(),
            # LLaMA-1/2 rotary: theta 10000, no frequency scaling
            rope=ComplexRoPE.Config(dim=dim // heads, max_seq_len=SHAPE["seq"], theta=SHAPE["rope_theta"],
                                    scaling="none"),
            # torchtitan's own builder refuses "sdpa" (below): built as flex, the inner attention swapped after
            attn_backend="flex" if attn_backend == "sdpa" else attn_backend,
        ),
    )
    if attn_backend == "sdpa":
        # torchtitan's `get_attention_config` refuses SDPA for language models because SDPA cannot take per-document
        # masks (models/common/config_utils.py:76-82); here every sequence is one document, so the block-causal mask
        # is the causal mask, and its `ScaledDotProductAttention` (cuDNN first, then flash; causal by `is_causal`)
        # computes the same attention with the kernel our CLI's `sdpa_backend: cudnn` uses. `make_gqa_config` keeps
        # the inner attention's config as given (config_utils.py:187-200), so swapping it is building with it.
        from torchtitan.models.common.attention import ScaledDotProductAttention

        for layer in config.layers:
            layer.attention.inner_attention = ScaledDotProductAttention.Config()
    return config


def partial_group_forward_supported() -> bool:
    """Whether this torch's FSDP2 finishes the forward of a grouped `fully_shard([a, b])` of which only some modules
    ran (torch 2.13's `FSDPState._force_complete_incomplete_states`, called from the root's post-forward). torch 2.11
    (the GPU machine's) does not: its group post-forward hook runs only once every module of the group has run
    forward (torch 2.11 distributed/fsdp/_fully_shard/_fsdp_state.py:381-423, `_register_group_forward_hooks`)."""
    from torch.distributed.fsdp._fully_shard._fsdp_state import FSDPState

    return hasattr(FSDPState, "_force_complete_incomplete_states")


def default_loss() -> str:
    """TITAN_LOSS: `chunked` (torchtitan's llama3 default, `ChunkedLossWrapper`) or `full` (its `CrossEntropyLoss`
    over the whole logits, the LM head in the model's forward)."""
    choice = os.environ.get("TITAN_LOSS", "chunked")
    if choice not in ("chunked", "full"):
        raise ValueError(f"TITAN_LOSS={choice}: chunked or full")
    return choice


def parallelize(model, **kwargs):
    """torchtitan's `parallelize_llama`, and where this torch's FSDP2 predates partial group forwards
    (`partial_group_forward_supported`), the norm/LM-head group's forwards mended (`_mend_head_group`)."""
    from torchtitan.models.llama3 import parallelize_llama

    model = parallelize_llama(model, **kwargs)
    if not partial_group_forward_supported():
        _mend_head_group(model)
    return model


def _mend_head_group(model) -> None:
    """Why torchtitan 0.3.0's chunked loss fails in backward on torch 2.11 ("The tensor has a non-zero number of
    elements, but its data is not allocated yet", the first GPU runs of 2026-12-07), and the mend.

    torchtitan shards the final norm and the LM head as ONE FSDP group (`fully_shard([model.norm, model.lm_head])`,
    torchtitan/distributed/fsdp.py:202-207). With `ChunkedLossWrapper` the model's forward skips the LM head
    (`_skip_lm_head`, models/common/decoder.py:245) and the loss calls the LM head alone, once a chunk. torch 2.11's
    group hooks run the group's pre-forward only when no module of the group is pending and its post-forward only
    once every module has run (torch 2.11 distributed/fsdp/_fully_shard/_fsdp_state.py:381-423), so after the norm
    no post-forward runs and no pre-backward hook is put on the norm's output. The loss ends its chunk loop with
    `lm_head.reshard()` (components/loss.py:768-772), which frees the group's unsharded parameters, the LM head's and
    the norm's (storage resized to 0, `_fsdp_param.py` `free_storage`); `loss.backward()` (trainer.py:828) then
    reaches the norm's backward with its saved weight unallocated and nothing unshards it again. FSDP of one rank,
    compile, CUDA graphs, the SPMD backend and the reshard policy play no part (the first GPU runs failed alike
    with each). torch 2.13 finishes such a group at the root's post-forward (`_force_complete_incomplete_states`)
    and runs the group's pre-forward at every module call: a CPU run on torch 2.13 trains, and the same run with
    torch 2.11.0's pure-Python FSDP2 package in its place fails as on the GPU.

    The mend does what torch 2.13 does, by two forward hooks that run after FSDP's own and only while the model
    skips the LM head (TITAN_LOSS=full leaves them idle): after the norm, the group's post-forward
    (`FSDPState._post_forward`: a pre-backward hook on the norm's output, which unshards the group again before the
    norm's backward); after each LM-head call of the loss, the group's pending set emptied, so that the next chunk
    runs the group's pre-forward (which hooks that chunk's post-backward: every chunk's gradient goes through FSDP's
    accumulation and the last chunk's reduction, as on torch 2.13). On the CPU, with torch 2.11's FSDP2 package,
    the mended chunked loss gives the gradients of torch 2.13's and of the full loss to 7 digits."""
    from torch.distributed.fsdp import FSDPModule

    norm, head = getattr(model, "norm", None), getattr(model, "lm_head", None)
    if not (isinstance(norm, FSDPModule) and isinstance(head, FSDPModule)):
        return
    state = norm._get_fsdp_state()
    if head._get_fsdp_state() is not state:
        return

    def after_norm(module, args, output):
        if getattr(model, "_skip_lm_head", False) and state._modules_to_run_forward:
            state._modules_to_run_forward.clear()
            return state._post_forward(module, args, output)
        return output

    def after_head(module, args, output):
        if getattr(model, "_skip_lm_head", False):
            state._modules_to_run_forward.clear()
        return output

    norm.register_forward_hook(after_norm)
    head.register_forward_hook(after_head)


def model_spec(layers: int, attn_backend: str):
    """The flavour registered at run time: a `ModelSpec` like `llama3.model_registry` returns (its parallelize
    function `parallelize`: torchtitan's, mended for torch 2.11's FSDP2)."""
    from torchtitan.distributed.pipeline_parallel import pipeline_llm
    from torchtitan.models.llama3.state_dict_adapter import Llama3StateDictAdapter
    from torchtitan.protocols.model_spec import ModelSpec

    return ModelSpec(name="llama3", flavor=f"llama7b-{layers}L", model=model_config(layers, attn_backend),
                     parallelize_fn=parallelize, pipelining_fn=pipeline_llm, post_optimizer_build_fn=None,
                     state_dict_adapter=Llama3StateDictAdapter)


def flops_per_token(layers: int) -> float:
    """6·N(non-embedding) + 12·L·d·S, counted as `biomed_llama.train.metrics.flops_per_token` counts the engine's
    model (the LM head counted, the embedding not; the norms' weights counted as parameters)."""
    d, v, s, f = SHAPE["dim"], SHAPE["vocab"], SHAPE["seq"], ffn_hidden_dim()
    per_layer = 4 * d * d + 3 * d * f + 2 * d
    non_embedding = layers * per_layer + d + v * d  # the layers, the final norm, the LM head
    return 6.0 * non_embedding + 12.0 * layers * d * s


def _synthetic_classes():
    """The stand-in tokenizer and the motif loader, as torchtitan `Configurable`s (defined once torchtitan is
    importable, so that this module's docstring and helpers import without it)."""
    from torchtitan.components.dataloader import BaseDataLoader
    from torchtitan.components.tokenizer import BaseTokenizer

    class VocabOnlyTokenizer(BaseTokenizer):
        """Reports the vocabulary size; the synthetic loader makes token ids itself, no text is read."""

        @dataclass(kw_only=True, slots=True)
        class Config(BaseTokenizer.Config):
            vocab_size: int = SHAPE["vocab"]

        def __init__(self, config: Config | None = None, *, tokenizer_path: str | None = None):
            super().__init__()
            self.vocab_size = (config or self.Config()).vocab_size
            self.eos_id = 2

        def encode(self, *args, **kwargs) -> list[int]:
            raise NotImplementedError("the synthetic anchor reads no text")

        def decode(self, *args, **kwargs) -> str:
            raise NotImplementedError("the synthetic anchor reads no text")

        def get_vocab_size(self) -> int:
            return self.vocab_size

    class MotifLoader(BaseDataLoader):
        """Batches of `bench_pretrain.MotifDataset`-style sequences (a random 32-token motif of (seed, index)
        repeated), one document per sequence: positions 0..S-1, so FlexAttention's block-causal mask is causal."""

        @dataclass(kw_only=True, slots=True)
        class Config(BaseDataLoader.Config):
            vocab_size: int = SHAPE["vocab"]
            seed: int = 0

        def __init__(self, config: Config, *, dp_world_size: int, dp_rank: int, tokenizer, seq_len: int,
                     local_batch_size: int, snapshot_every_n_steps: int | None = None, **kwargs):
            self.config, self.seq_len, self.batch = config, seq_len, local_batch_size
            self.dp_rank, self.dp_world_size, self.index = dp_rank, dp_world_size, 0

        def _sequence(self, i: int) -> np.ndarray:
            motif = np.random.default_rng([self.config.seed, i]).integers(3, self.config.vocab_size, size=32)
            return np.resize(motif, self.seq_len + 1).astype(np.int64)

        def __iter__(self):
            positions = torch.arange(self.seq_len).expand(self.batch, -1)
            while True:
                ids = [self.index * self.dp_world_size * self.batch + self.dp_rank * self.batch + b
                       for b in range(self.batch)]
                self.index += 1
                rows = torch.from_numpy(np.stack([self._sequence(i) for i in ids]))
                yield {"input": rows[:, :-1].contiguous(), "positions": positions.clone()}, rows[:, 1:].contiguous()

        def state_dict(self) -> dict:
            return {"index": self.index}

        def load_state_dict(self, state_dict: dict) -> None:
            self.index = state_dict.get("index", 0)

    return VocabOnlyTokenizer, MotifLoader


def _activation_checkpoint(choice: str):
    """TITAN_AC: none, selective, full, or budget:X."""
    from torchtitan.distributed.activation_checkpoint import FullAC, MemoryBudgetAC, SelectiveAC

    if choice == "none":
        return None
    if choice == "selective":
        return SelectiveAC.Config()
    if choice == "full":
        return FullAC.Config()
    if choice.startswith("budget:"):
        return MemoryBudgetAC.Config(memory_budget=float(choice.split(":", 1)[1]))
    raise ValueError(f"TITAN_AC={choice}: none, selective, full or budget:X")


def llama7b():
    """The torchtitan Trainer.Config of the anchor run (torchtitan's config-registry entry point); the sizes come
    from TITAN_* (layers 8, micro 8, accumulation 2, steps 10, AC none, attention `default_attention()`, loss
    `default_loss()`)."""
    from torchtitan.components.checkpoint import CheckpointManager
    from torchtitan.components.loss import ChunkedLossWrapper, CrossEntropyLoss
    from torchtitan.components.metrics import MetricsProcessor
    from torchtitan.components.optimizer import LRSchedulersContainer, default_adamw
    from torchtitan.components.validate import Validator
    from torchtitan.config import CompileConfig, ParallelismConfig, TrainingConfig
    from torchtitan.models.common.config_utils import decoder_vocab_size
    from torchtitan.trainer import Trainer

    tokenizer_cls, loader_cls = _synthetic_classes()
    layers, micro, acc = _env_int("TITAN_LAYERS", 8), _env_int("TITAN_MICRO", 8), _env_int("TITAN_ACC", 2)
    world = _env_int("WORLD_SIZE", 1)
    spec = model_spec(layers, default_attention())
    steps = _env_int("TITAN_STEPS", 10)
    cross_entropy = CrossEntropyLoss.Config(global_vocab_size=decoder_vocab_size(spec))
    return Trainer.Config(
        loss=(ChunkedLossWrapper.Config(loss_fn=cross_entropy) if default_loss() == "chunked" else cross_entropy),
        hf_assets_path=str(REPO / "data" / "sample" / "tokenizer"),  # not read: the tokenizer is a stand-in
        tokenizer=tokenizer_cls.Config(),
        model_spec=spec,
        optimizer=default_adamw(lr=3e-4),
        lr_scheduler=LRSchedulersContainer.Config(warmup_steps=max(1, steps // 10)),
        training=TrainingConfig(local_batch_size=micro, global_batch_size=micro * acc * world, seq_len=SHAPE["seq"],
                                steps=steps, disable_cuda_graphs=os.environ.get("TITAN_CUDA_GRAPHS", "1") == "0"),
        dataloader=loader_cls.Config(),
        metrics=MetricsProcessor.Config(log_freq=1),
        # FSDP over every rank (data_parallel_shard_degree -1); parameters kept gathered from forward to backward
        # ("never" reshard, TITAN_RESHARD), as our CLI's per-card setting does (reshard_after_forward: false)
        # its SPMD backend: TITAN_SPMD, default its own (spmd_types)
        parallelism=ParallelismConfig(fsdp_reshard_after_forward=os.environ.get("TITAN_RESHARD", "never"),
                                      **({"spmd_backend": os.environ["TITAN_SPMD"]} if "TITAN_SPMD" in os.environ else {})),
        checkpoint=CheckpointManager.Config(enable=False),
        activation_checkpoint=_activation_checkpoint(os.environ.get("TITAN_AC", "none")),
        compile=CompileConfig(enable=os.environ.get("TITAN_COMPILE", "1") == "1", components=["model", "loss"]),
        validator=Validator.Config(enable=False),
        dump_folder=os.environ.get("TITAN_DUMP", "/tmp/titan_outputs"),
    )


def _datasets_importable() -> str:
    """torchtitan's validator module imports HF `datasets` at import time; the anchor's synthetic loader never calls
    it. When the carried `datasets` does not import against the machine's own packages (pyarrow, fsspec versions),
    a stand-in module whose functions refuse to run takes its place, and the result row says so."""
    try:
        import datasets  # noqa: F401

        return "datasets " + datasets.__version__
    except Exception as e:  # noqa: BLE001 - any import failure of a module the run never calls
        import types

        def refuse(*args, **kwargs):
            raise RuntimeError("the torchtitan anchor reads synthetic tokens; HF datasets is not importable here")

        stub, dist = types.ModuleType("datasets"), types.ModuleType("datasets.distributed")
        stub.Dataset, stub.load_dataset, dist.split_dataset_by_node = object, refuse, refuse
        stub.distributed = dist
        sys.modules.update({"datasets": stub, "datasets.distributed": dist})
        return f"datasets stand-in ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"


def _torch_compat() -> str | None:
    """torchtitan 0.3.0 imports `torch.distributed.fsdp.DataParallelMeshDims` at module level
    (torchtitan/distributed/full_dtensor.py:23, distributed/fsdp.py), a name torch 2.11 (the GPU machine's) lacks: a
    static check of torchtitan's `from torch… import` lines against torch 2.11.0's sources finds no other missing
    name. torchtitan passes it to `fully_shard` only when a data-parallel mesh has more than one rank under its
    `full_dtensor` / `spmd_types` backends (fsdp.py:171, full_dtensor.py:86-91): never on one GPU, nor under
    `partial_dtensor` (TITAN_SPMD). So a stand-in for the name lets torchtitan import; building one fails loudly."""
    import torch.distributed.fsdp as fsdp

    if hasattr(fsdp, "DataParallelMeshDims"):
        return None

    class DataParallelMeshDims:
        """Stand-in for torch >= 2.12's class (its name only)."""

        def __init__(self, *args, **kwargs):
            raise RuntimeError(f"torch {torch.__version__} has no DataParallelMeshDims: run torchtitan's anchor on one "
                               f"GPU or with TITAN_SPMD=partial_dtensor")

    fsdp.DataParallelMeshDims = DataParallelMeshDims
    return f"torch {torch.__version__}: torch.distributed.fsdp.DataParallelMeshDims stand-in"


def main() -> None:
    """Run torchtitan's trainer as its `train.py` does, timing each step; rank 0 prints one JSON line of results."""
    datasets_note, compat_note = _datasets_importable(), _torch_compat()
    from torchtitan.config import ConfigManager
    from torchtitan.tools.logging import init_logger
    from torchtitan.trainer import Trainer

    init_logger()
    stamps: list[tuple[float, float]] = []
    step = Trainer.train_step

    def timed(self, data_iterator):  # the step as torchtitan runs it, with a sync at its end to time it
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = step(self, data_iterator)
        torch.cuda.synchronize()
        stamps.append((t0, time.perf_counter()))
        if len(stamps) == warmup:  # peaks after the compile and the CUDA-graph capture
            torch.cuda.reset_peak_memory_stats()
        return out

    Trainer.train_step = timed
    warmup = _env_int("TITAN_WARMUP", 3)
    config = ConfigManager().parse_args(["--module", "bench.anchor_torchtitan", "--config", "llama7b", *sys.argv[1:]])
    trainer = config.build()
    try:
        trainer.train()
        steady = [b - a for a, b in stamps[warmup:]]
        layers, micro = _env_int("TITAN_LAYERS", 8), config.training.local_batch_size
        tokens = micro * trainer.gradient_accumulation_steps * config.training.seq_len
        tok_s = tokens / (sum(steady) / len(steady))
        fpt = flops_per_token(layers)
        from biomed_llama.train.metrics import peak_flops

        peak = peak_flops(trainer.device)
        row = {"name": "torchtitan", "torchtitan": _version(), "datasets": datasets_note, "torch_compat": compat_note,
               "spmd_backend": config.parallelism.spmd_backend, "layers": layers, "micro": micro,
               "acc": trainer.gradient_accumulation_steps, "world": torch.distributed.get_world_size(),
               "ac": os.environ.get("TITAN_AC", "none"), "attention": default_attention(),
               "loss": default_loss(), "fsdp_group_mend": not partial_group_forward_supported(),
               "reshard_after_forward": config.parallelism.fsdp_reshard_after_forward,
               "cuda_graphs": not config.training.disable_cuda_graphs, "compile": config.compile.enable,
               "device": torch.cuda.get_device_name(trainer.device), "steps_timed": len(steady),
               "step_s": steady, "tok_s_per_gpu": tok_s, "flops_per_token": fpt,
               "mfu": tok_s * fpt / peak if peak else None,
               "peak_mem_gib": torch.cuda.max_memory_allocated(trainer.device) / 2**30,
               "peak_reserved_gib": torch.cuda.max_memory_reserved(trainer.device) / 2**30,
               "mem_cap_gib": float(os.environ["BIOMED_MEM_CAP_GIB"]) if os.environ.get("BIOMED_MEM_CAP_GIB") else None}
        if torch.distributed.get_rank() == 0:
            print(json.dumps(row), flush=True)
    finally:
        trainer.close()
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def _version() -> str:
    from importlib.metadata import version

    return version("torchtitan")


if __name__ == "__main__":
    main()
