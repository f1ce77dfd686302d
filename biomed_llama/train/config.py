"""Params of the training engine: the shared optimiser section, continued pretraining and fine-tuning.

`OptimConfig` is declared once and used by every stage (`pretrain.optim`, `finetune.instruct.optim`,
`finetune.task.optim`); fine-tuning's defaults (`FinetuneOptim`) are the original's HF Trainer
arguments. The engine runs on a `PretrainConfig`: a fine-tune run's is built by
`FinetuneConfig.engine_config`, validated like a params file (a wrong key or value fails there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

TaskFormat = Literal["medqa", "medmcqa", "pubmedqa"]
LossWeighting = Literal["token", "sequence"]
Kernel = Literal["rms_norm", "swiglu", "rope", "linear_cross_entropy"]
# The demo's instruction fixtures (the same folder as instruct/config.py's; not imported from there, so that
# the training stages do not depend on the instruct-mix stage's code).
FIXTURES = "data/sample/instruct"


class OptimConfig(StrictModel):
    """AdamW with HF Trainer's decay groups, then linear warmup + cosine decay of the learning rate.

    The defaults are the demo's pretraining (params.yaml); `FinetuneOptim` has fine-tuning's. configs/paper.yaml
    sets the paper's.
    """

    lr: float = Field(2.0e-3, gt=0)
    """Peak learning rate: the demo's 2e-3 (a tiny random model needs a larger step); pretraining in the paper:
    README 3e-5, released multi-node script 1e-5 (configs/paper.yaml)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas, each in [0, 1) (pretraining: the paper's 0.9, 0.95)."""
    eps: float = Field(1e-8, gt=0)
    """AdamW epsilon (HF Trainer default)."""
    weight_decay: float = Field(0.1, ge=0)
    """AdamW weight decay; norms and biases get none unless `decay_norms_and_biases`."""
    decay_norms_and_biases: bool = False
    """Decay every parameter, norm weights and biases included, as the released runs did: HF Trainer 4.28
    exempts only biases and `nn.LayerNorm` weights (LLaMA's RMSNorm is neither), and under its FSDP the
    optimizer saw flattened parameters whose names hid even those (REPRODUCTION.md correction 6)."""
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    """Fraction of steps of linear warmup (warmup steps = ceil(ratio × steps), as HF Trainer)."""
    num_cycles: float = Field(0.39758361765043326, ge=0)
    """Cosine cycles after warmup (pretraining: the released script's 0.3975…, stopping above 0; 0.5 decays to 0)."""
    max_grad_norm: float = Field(1.0, gt=0)
    """Clip the global gradient norm (over all shards) to this."""

    @model_validator(mode="after")
    def _check(self) -> OptimConfig:
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must lie in [0, 1) (got {list(self.betas)})")
        return self


class FinetuneOptim(OptimConfig):
    """`OptimConfig` with fine-tuning's defaults: the original's HF Trainer arguments (evaluation/train.sh:42-45)
    except the learning rate, the demo's."""

    lr: float = Field(1e-3, gt=0)
    """Peak learning rate: the demo's 1e-3 (a tiny random model); the original's fine-tuning: 2e-5 (configs/paper.yaml)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas, each in [0, 1) (HF Trainer defaults, as the original)."""
    weight_decay: float = Field(1e-4, ge=0)
    """AdamW weight decay (the original's fine-tuning: 1e-4); norms and biases get none unless `decay_norms_and_biases`."""
    num_cycles: float = Field(0.5, ge=0)
    """Cosine cycles after warmup: 0.5 = HF `lr_scheduler_type cosine`, decaying to 0 (the original's setting)."""


class ReleasedLoader(StrictModel):
    """The released run's data stream as it ran (correction 8 of REPRODUCTION.md), not a sound loader.

    `pretrain/train_multi_nodes.sh:38-44` ran HF Trainer 4.28 over `utils/data.py`'s
    `LMSuperLargeDataset`, an `IterableDataset` that does not split its stream between loader
    workers. The Trainer gave rank r every `world_size`-th group of `micro_batch` sequences of the
    file-order stream; each of the `workers` DataLoader workers then iterated that whole share, and
    the DataLoader took one batch from each worker in turn: every batch came `workers` times in a
    row, and a one-epoch run (its length from `len(dataset)`) saw 1/`workers` of the distinct data.
    The engine feeds each step exactly the sequences the released ranks fed, for any world size here.
    """

    workers: int = Field(16, ge=1)
    """`--dataloader_num_workers` of the released run (16)."""
    world_size: int = Field(32, ge=1)
    """Ranks of the released run (8 nodes × 4 GPUs = 32)."""
    micro_batch: int = Field(1, ge=1)
    """`--per_device_train_batch_size` of the released run (1)."""


class PretrainConfig(StrictModel):
    """Continued pretraining hyperparameters, sharding and checkpointing."""

    # Speed, placement, logging and checkpoint cadence: the run id leaves them out too (train/runs.py), so a
    # resume may change them and a DVC run never reruns for them.
    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset(
        {
            "micro_batch_size",
            "device",
            "shard_size",
            "reshard_after_forward",
            "gathered_layers",
            "compile",
            "sdpa_backend",
            "kernels",
            "grad_sync",
            "activation_checkpointing",
            "activation_memory_budget",
            "log_every",
            "checkpoint_every",
            "checkpoint_async",
            "keep_checkpoints",
            "progress",
            "deterministic",
        }
    )

    tokens: str = "data/tokens"
    """The tokenize stage's output folder (`<subset-slug>/<split>/tokens.bin` + manifest.json)."""
    subsets: list[str] = Field(default_factory=lambda: ["pubmed_abstracts", "pubmed_central"], min_length=1)
    """Subset slugs under `tokens` to train on, concatenated in this order before shuffling."""
    split: str = "train"
    """Which split of each subset to read."""
    tokenizer: str = "data/sample/tokenizer"
    """Tokenizer directory copied into the exported model (the base model's for the paper profile)."""
    max_seq_length: int = Field(128, ge=2)
    """Tokens per training sequence (2048 in the paper)."""
    packing: Literal["truncate", "concat"] = "concat"
    """`truncate`: one document per sequence, BOS + text + EOS cut to max_seq_length and padded (the released loader); `concat`: BOS + text + EOS documents joined and cut into full sequences."""
    document_order: Literal["subset_major", "interleaved", "shuffled"] = "subset_major"
    """Order of the sequences the loader reads (before any `shuffle`): `subset_major` = each subset whole, in
    `subsets` order; `interleaved` = the subsets merged by a seeded uniform random interleave keeping each
    subset's own order (how the Pile's shards hold them: a per-shard extraction, as the released
    `/INPUT/pile/pile-pubmed/train` folder suggests, keeps them mixed); `shuffled` = one seeded permutation.
    In `truncate` mode a sequence is a document. It decides what the released loader's one epoch (its first
    1/`workers` of the stream) holds: subset-major, only abstracts (README "Params and profiles")."""
    shuffle: bool = True
    """Shuffle sequences with a seeded permutation (same order for any world size); false reads in file order like the original."""
    released_loader: ReleasedLoader | None = None
    """Replay the released run's duplicated stream (each batch `workers` times in a row, 1/`workers` of the
    data per epoch; see `ReleasedLoader`); null: every sequence once per epoch (the README's intent)."""
    global_batch_size: int = Field(16, ge=1)
    """Sequences per optimizer step over all ranks (the demo's 16; 2048 in the paper); = micro × accumulation ×
    data-parallel size."""
    micro_batch_size: int = Field(8, ge=1)
    """Sequences per rank per forward/backward (the demo's 8; the paper's 2); the code derives gradient accumulation
    from it."""
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps; null = one epoch (every full global batch of the data once)."""
    optim: OptimConfig = Field(default_factory=OptimConfig)
    """AdamW and the LR schedule (defaults: the paper's README pretraining)."""
    loss_weighting: LossWeighting = "token"
    """How a step's loss weighs target tokens. `token`: one mean over every target token of the global batch.
    `sequence`: the mean over the global batch's sequences of each sequence's mean token loss, what HF Trainer
    4.28 computed with one sequence per device and gradient accumulation (the released pretrain/train_multi_nodes.sh
    and evaluation/train.sh; REPRODUCTION.md correction 5); a sequence without targets counts in neither.
    Either is the same for every micro × accumulation × world split."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """`auto`: CUDA with NCCL when a GPU is visible, else CPU with gloo."""
    param_dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the sharded parameters (fp32 master weights are kept either way); bf16 for the paper."""
    reduce_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of gradient reduce-scatter/all-reduce (the original reduced in bf16)."""
    shard_size: int | None = Field(None, ge=1)
    """Ranks per shard group of the (replicate, shard) mesh; null = the GPUs of one node (LOCAL_WORLD_SIZE)."""
    reshard_after_forward: bool = True
    """Free gathered parameters after forward (ZeRO-3); false keeps them to backward (ZeRO-2, the original's
    SHARD_GRAD_OP) and across the micro batches of one step (no gather per micro batch; the same peak memory)."""
    gathered_layers: int = Field(0, ge=0)
    """With `reshard_after_forward: true`: the last this many decoder layers stay gathered from their first forward
    to the step's last backward anyway (no second all-gather in backward, none between micro batches). Each holds
    one layer's parameters in `param_dtype` for the whole step (386 MiB for the 7B in bf16): memory left under a
    cap spent on fewer all-gathers beside the matmuls. Speed only; 0 is FSDP's plain resharding."""
    compile: bool = False
    """`torch.compile` each decoder layer."""
    sdpa_backend: Literal["auto", "cudnn", "flash", "efficient"] = "auto"
    """CUDA kernel for `model.attention: sdpa`: `auto` is PyTorch's own choice; the others are tried first (then
    flash, then efficient). Speed only; ignored on CPU."""
    kernels: list[Kernel] = Field(default_factory=list)
    """Fused Triton kernels of liger-kernel to use on CUDA: `rms_norm`, `swiglu`, `rope`, `linear_cross_entropy`
    (the LM head and loss without the vocabulary-sized logits; honours `loss_weighting`). On CPU the plain
    modules run (liger has no CPU path). Speed and memory only (numerics within bf16 rounding)."""
    grad_sync: Literal["last", "every"] = "last"
    """Gradient accumulation: reduce-scatter on the `last` micro batch only (unsharded gradients are kept
    between micro batches: more memory, less traffic) or on `every` one (sharded gradients only). On one node
    `every` is faster once memory is tight: the 7B at micro 8 on 1×2 H200 ran 59% MFU with it, 52% with `last`,
    whose extra unsharded gradients stalled the caching allocator (bench/RESULTS.md)."""
    activation_checkpointing: Literal["none", "full", "selective"] = "none"
    """Recompute activations in backward: every layer whole (`full`), or keep matmul/attention outputs and recompute the rest (`selective`)."""
    activation_memory_budget: float = Field(1.0, gt=0, le=1)
    """With `compile`: the share of each compiled layer's saved activations to keep (functorch's partitioner
    budget). Below 1 the partitioner recomputes, in backward, the ops that are cheapest by FLOPs until the saved
    activations fit; 1 keeps its runtime-optimal choice. Memory and speed only: it lets a larger micro batch fit
    (an 80 GB card on 1×2), at the cost of the recomputation."""
    float8: Literal["tensorwise", "rowwise"] | None = None
    """NOT the paper's numerics (bf16; off in every profile): train the decoder layers' linear layers in FP8
    (torchao float8 training, dynamic scaling; the LM head stays bf16). `tensorwise`: one scale per tensor, the
    FSDP2 all-gathers in float8 too; `rowwise`: one scale per row, closer to bf16, slower. For speed on
    H100/H200 (compute capability 8.9+, with `compile`); refused on the CPU, without torchao and on older GPUs.
    It changes the numbers trained, so it changes the run id. null: bf16 (bench/RESULTS.md has its speed and loss)."""
    log_every: int = Field(5, ge=1)
    """Log a line (and a loss row) every this many steps (the demo's 5; configs/paper.yaml: 10)."""
    checkpoint_every: int = Field(20, ge=1)
    """Save a distributed checkpoint every this many steps (the demo's 20; 3000 in the released script)."""
    checkpoint_async: bool = False
    """Save checkpoints in the background (DCP async save): training waits only while the state is copied to
    host memory, not while it is written and hashed; the checkpoint becomes resumable once complete. Pins host
    memory equal to each GPU's share of the training state (40 GB per GPU for 7B on 1×2), kept across saves."""
    max_nonfinite_skips: int = Field(0, ge=0)
    """A step whose loss or gradient norm is not finite (NaN, inf) is never applied, and stops the run there (one
    line naming the step and the value, exit 5, nothing exported; the last finite checkpoint is kept). A
    correction option (the released HF Trainer 4.28 trained on through NaN): skip up to this many such steps (the
    batch is consumed, no update, the schedule does not advance) before stopping, as large-scale trainers do.
    0: stop at the first."""
    keep_checkpoints: int = Field(2, ge=1)
    """Keep only the newest this many checkpoints of the run's own folder (other runs' folders are never pruned);
    the demo's 2, configs/paper.yaml: 3 (the original's `save_total_limit`)."""
    checkpoint_dir: str = "checkpoints/pretrain"
    """Root of run folders `<run_id>/step-NNNNNNNN/`; `run_id` fingerprints seed, model, numeric params, steps and the data's content. A rerun with the same params and data resumes from the newest complete checkpoint of its folder; other params or data start fresh in a new folder, leaving the others untouched."""
    added_tokens: int = Field(0, ge=0)
    """Rows appended to the input embeddings and the LM head of `model.base` before training, each set to the mean
    of the existing rows: the released fine-tuning's `[PAD]` (evaluation/main.py:98-103 → the original's
    modeling_utils.py:24-35: `resize_token_embeddings`, whose new rows the fork's `_get_resized_embeddings`
    normal-inits (its modeling_utils.py:1471), then overwritten by the mean of the old rows). Nothing feeds the new id, but its logit joins
    every softmax. The export drops the rows again (the model keeps the base's vocabulary and tokenizer). Set
    by `finetune.pad_token`; 0 for pretraining."""
    output: str = "models/pretrained"
    """The exported HF model directory (safetensors + tokenizer + config + manifest)."""
    export_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of the exported weights."""
    export_init: str | None = "models/base"
    """Also export the starting weights (the random init, or `model.base`) before training as a HF directory
    here: `models/base`, the demo's stand-in for the untrained LLaMA-7B row of the eval table; null: don't."""
    metrics: str = "metrics/pretrain.json"
    """Final metrics JSON (DVC metrics)."""
    plots: str = "plots/pretrain"
    """Folder of `loss.tsv` (step, loss, lr, grad_norm) for DVC plots."""
    progress: bool = True
    """Show a rich progress bar on rank 0."""
    deterministic: bool = False
    """Deterministic kernels (`torch.use_deterministic_algorithms`, cuBLAS's fixed workspace, Inductor's
    deterministic mode): two runs of the same step on the same GPU give the same bits, so a run killed and resumed
    can be compared byte for byte with an uninterrupted one (bench/e2e.sh's resume check). On the GPU the default
    kernels (embedding scatter-add, attention backward, autotuned matmuls) accumulate in a varying order, which
    moves weights by about one bf16 step. An op without a deterministic kernel stops the run with torch's error.
    Slower; the computation is the same, so it is speed-only (not in the run id)."""

    @model_validator(mode="after")
    def _check(self) -> PretrainConfig:
        if self.activation_memory_budget < 1 and not self.compile:
            raise ValueError(
                "pretrain.activation_memory_budget below 1 needs pretrain.compile: true "
                "(it is the compiler's recomputation budget)"
            )
        if self.gathered_layers and not self.reshard_after_forward:
            raise ValueError(
                "pretrain.gathered_layers applies with reshard_after_forward: true "
                "(false keeps every layer gathered already)"
            )
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"pretrain.micro_batch_size ({self.micro_batch_size}) must divide "
                f"pretrain.global_batch_size ({self.global_batch_size})"
            )
        rl = self.released_loader
        if rl is not None:
            if self.shuffle:
                raise ValueError(
                    "pretrain.released_loader replays the released file-order stream; set pretrain.shuffle: false"
                )
            if self.global_batch_size % (rl.world_size * rl.micro_batch):
                raise ValueError(
                    f"pretrain.released_loader: world_size × micro_batch ({rl.world_size} × {rl.micro_batch}) "
                    f"must divide pretrain.global_batch_size ({self.global_batch_size})"
                )
        return self


Start = Literal["pretrained", "base"]


class TaskTrainSet(StrictModel):
    """A benchmark's train set for task fine-tuning (a fine-tune row of the table)."""

    format: TaskFormat
    """Published format of the file (`medqa`, `medmcqa` or `pubmedqa`)."""
    path: str
    """The train file (PubMedQA: `ori_pqaa.json`, the artificial set, as in the original)."""
    seeds: list[int] | None = Field(None, min_length=1)
    """Fine-tune once per seed (data order), one model each in `<prefix><task>/seed-<seed>/`; the table shows
    mean ± std over them (the seed's USMLE cells: 0.3946±0.008). null: one run with the top-level seed,
    the model in `<prefix><task>` itself."""

    @model_validator(mode="after")
    def _check(self) -> TaskTrainSet:
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct (got {self.seeds})")
        return self


class FinetuneStart(StrictModel):
    """A second model fine-tuned exactly as `finetune.model` is: the table's LLaMA-7B instructed and fine-tune rows."""

    model: str = "models/base"
    """The HF directory to start from (the paper: LLaMA-7B; the demo: the random init `models/base`)."""
    model_external: bool = False
    """True when `model` was made by no stage here (the downloaded LLaMA-7B): as `finetune.model_external`."""
    instruct_output: str = "models/base-instruct"
    """HF directory written by its instruction tuning."""
    task_output_prefix: str = "models/base-ft-"
    """Its task fine-tunes write `<prefix><task>`."""


@dataclass(frozen=True)
class RunPaths:
    """Where one fine-tune run writes: its name (metrics, plots, log) and its folders."""

    name: str
    output: str
    checkpoint_dir: str
    metrics: str
    plots: str


class TrainerSteps(StrictModel):
    """The released fine-tuning's step count, as HF Trainer 4.28 computed it (the authors' fork, be40569cc).

    `trainer.py:865-870` gives each of `world_size` ranks a `DistributedSampler` (no drop_last: every rank
    gets ceil(n / world_size) examples, the shortfall padded with repeats), `trainer.py:913-922` batches it
    (`--dataloader_drop_last False`, evaluation/train.sh:36), so `len_dataloader = ceil(ceil(n / world) /
    micro)`; `trainer.py:1690-1691`: steps per epoch = `len_dataloader // accumulation` (at least 1);
    `trainer.py:1702`: steps = `ceil(epochs × steps per epoch)`. At an epoch's end the Trainer carries the
    `len_dataloader mod accumulation` leftover micro batches into the next epoch's first step (its
    accumulation counter `total_batched_samples` runs across epochs, `trainer.py:1868,1905,1952`) and stops after
    the last step, leaving the last epoch's final `epochs × leftover` micro batches unused. The engine
    instead steps through whole global batches of a fresh per-epoch permutation (dropping each epoch's
    `n mod global_batch` tail); with this count its epochs end where the Trainer's do whenever
    `ceil(n / world) // (micro × accumulation) = n // global_batch`, as for every released mode (MedQA 237
    steps, MedMCQA 4,284, PubMedQA 4,950, the mixture 1,171), so no step starts an extra epoch's shuffle.
    """

    world_size: int = Field(8, ge=1)
    """Ranks of the released fine-tuning (evaluation/train.sh:21 `--nproc_per_node=8`)."""
    micro_batch: int = Field(1, ge=1)
    """`--per_device_train_batch_size` of the released fine-tuning (evaluation/train.sh:30)."""

    def steps(self, n_examples: int, epochs: float, global_batch: int) -> int:
        """Optimiser steps of `epochs` passes over `n_examples` at `global_batch` sequences a step."""
        accumulation = global_batch // (self.world_size * self.micro_batch)
        len_dataloader = math.ceil(math.ceil(n_examples / self.world_size) / self.micro_batch)
        return math.ceil(epochs * max(len_dataloader // accumulation, 1))


class FinetuneHparams(StrictModel):
    """Optimiser, schedule and batch settings of one fine-tune mode (the original's HF Trainer arguments)."""

    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset({"micro_batch_size"})

    optim: FinetuneOptim = Field(default_factory=FinetuneOptim)
    """AdamW and the LR schedule; unset keys: lr 1e-3 (the demo's), wd 1e-4, betas (0.9, 0.999), warmup 0.03,
    cosine to 0."""
    epochs: float = Field(1, gt=0)
    """Passes over the training examples (the demo's 1; the original's task fine-tuning: 3); the step count: see
    `trainer_steps`."""
    global_batch_size: int = Field(8, ge=1)
    """Sequences per optimiser step over all ranks (the demo's 8; the original: 1 per device × 16 accumulation × 8
    GPUs = 128)."""
    micro_batch_size: int = Field(4, ge=1)
    """Sequences per rank per forward pass (the demo's 4; the original's 1); accumulation steps = global / (micro ×
    world)."""
    loss_weighting: LossWeighting | None = None
    """`token` or `sequence` (see `pretrain.loss_weighting`); null: the same as `pretrain.loss_weighting`."""
    trainer_steps: TrainerSteps | None = None
    """Count steps as the released HF Trainer 4.28 did over its ranks (`TrainerSteps`: `epochs × (ceil(n / world /
    micro) // accumulation)`; the paper profile); null: `ceil(epochs × n / global_batch_size)`, which the demo keeps
    (its world is not the release's 8 ranks), 1-2 steps more on the paper's data, the extra ones from a new epoch."""

    @model_validator(mode="after")
    def _check(self) -> FinetuneHparams:
        if self.global_batch_size % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size ({self.micro_batch_size}) must divide global_batch_size ({self.global_batch_size})"
            )
        ts = self.trainer_steps
        if ts is not None and self.global_batch_size % (ts.world_size * ts.micro_batch):
            raise ValueError(
                f"trainer_steps: world_size × micro_batch ({ts.world_size} × {ts.micro_batch}) must divide "
                f"global_batch_size ({self.global_batch_size})"
            )
        return self

    def steps(self, n_examples: int) -> int:
        """Optimiser steps for `n_examples` examples: `trainer_steps`' count, else ceil(epochs × n / global batch), ≥ 1."""
        if self.trainer_steps is not None:
            return self.trainer_steps.steps(n_examples, self.epochs, self.global_batch_size)
        return max(1, math.ceil(self.epochs * n_examples / self.global_batch_size))


class FinetuneConfig(StrictModel):
    """Instruction tuning (`instruct`) and per-task full fine-tuning (`task`).

    Everything the engine needs beyond these (device, dtypes, sharding, compile, kernels, logging,
    keep-K, checkpoint mode, and the loss weighting unless a mode sets its own `loss_weighting`)
    comes from the `pretrain` section: `engine_config` says what a fine-tune run replaces. The
    released fine-tuning ran HF Trainer 4.28 with one sequence per device like the pretraining
    (evaluation/train.sh), so inheriting `pretrain.loss_weighting` keeps the two alike.
    """

    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset({"checkpoint_every"})
    # The `pretrain` keys a fine-tune's engine config takes (`engine_config`); every other pretrain key is
    # replaced by the mode's own or, for the token stream's keys, unused (the SFT dataset is the data).
    INHERITED: ClassVar[frozenset[str]] = frozenset(
        {
            "loss_weighting",
            "device",
            "param_dtype",
            "reduce_dtype",
            "shard_size",
            "reshard_after_forward",
            "gathered_layers",
            "compile",
            "sdpa_backend",
            "kernels",
            "grad_sync",
            "activation_checkpointing",
            "activation_memory_budget",
            "log_every",
            "checkpoint_async",
            "keep_checkpoints",
            "export_dtype",
            "progress",
            "deterministic",
        }
    )

    model: str = "models/pretrained"
    """Model to fine-tune: a HF directory (the pretrain stage's export by default)."""
    model_external: bool = False
    """True when `model` was made by no stage here (a downloaded base model) and so has no manifest: its
    files are hashed into the run fingerprint and the export's manifest instead of verified. A model
    without a manifest and without this opt-in is refused (exit 3)."""
    instruct_output: str = "models/instruct"
    """HF directory written by instruction tuning."""
    task_output_prefix: str = "models/ft-"
    """Task fine-tuning writes `<prefix><task>` (e.g. `models/ft-medqa`)."""
    checkpoints: str = "checkpoints/finetune"
    """Distributed checkpoints, one sub-folder per run (`instruct`, `task-<name>`)."""
    metrics_prefix: str = "metrics/finetune_"
    """Metrics JSON per run: `<prefix>instruct.json`, `<prefix><task>.json`."""
    plots: str = "plots/finetune"
    """Loss-curve folders per run: `<plots>/instruct/`, `<plots>/<task>/`."""
    checkpoint_every: int = Field(50, ge=1)
    """Save a distributed checkpoint every this many steps (the demo's 50; the original: 300, keeping 3)."""
    max_length: int = Field(256, ge=4)
    """Longest sequence in tokens (BOS + prompt + output + EOS); 2048 in the paper."""
    truncation: Literal["right", "prompt_left"] = "right"
    """Over-long examples: `right` cuts the end like the original (an example left without any output
    token is dropped and counted); `prompt_left` drops prompt tokens from the left so the output survives."""
    pad_token: Literal["none", "released"] = "none"
    """`released`: add `[PAD]` to the vocabulary for training as evaluation/main.py:98-103 did (32,001 rows for
    LLaMA: one extra logit in every softmax, its rows the mean of the others; `pretrain.added_tokens`); the
    export drops the row, so the exported model and every evaluation keep the base's 32,000 (the released
    evaluation could only differ where greedy decoding picked `[PAD]`, which its decode then skipped).
    `none`: the base vocabulary. Padding never carries a target either way (one sequence per device, as released)."""
    tokenization: Literal["joint", "separate"] = "joint"
    """How an (input, output) pair becomes ids: `joint` = the released code's (input + output tokenized as
    one string, the first len(ids(input)) positions masked; `evaluation/instruct_dataset.py:85-105`);
    `separate` = each tokenized alone (an exact mask boundary, but other output pieces with SentencePiece)."""
    mixture: str = "data/instruct"
    """The instruct-mix output folder read in `instruct` mode."""
    instruct: FinetuneHparams = Field(default_factory=FinetuneHparams)
    """Instruction tuning (defaults: the demo's): the original trained 1 pass over its 150,000 drawn records (its 3
    epochs × 50,000 were folded into the draw), lr 2e-5, wd 1e-4, warmup 0.03, cosine, batch 128."""
    task: FinetuneHparams = Field(default_factory=FinetuneHparams)
    """Task fine-tuning (the table's fine-tune rows; defaults: the demo's): the original's lr 2e-5, wd 1e-4, warmup
    0.03, cosine, 3 epochs, batch 128."""
    tasks: dict[str, TaskTrainSet] = Field(
        default_factory=lambda: {
            # USMLE over two seeds, as the demo: its fine-tune cells are a mean ± std
            "medqa": TaskTrainSet(format="medqa", path=f"{FIXTURES}/medqa/train_4opt.jsonl", seeds=[1234, 1235]),
            "medmcqa": TaskTrainSet(format="medmcqa", path=f"{FIXTURES}/medmcqa/train_cop1.jsonl"),
            "pubmedqa": TaskTrainSet(format="pubmedqa", path=f"{FIXTURES}/pubmedqa/ori_pqaa.json"),
        }
    )
    """Train sets of `task` mode by task name (the name picks the output folder `<prefix><name>`)."""
    base: FinetuneStart | None = Field(default_factory=FinetuneStart)
    """The LLaMA-7B rows' runs (`--base`): instruction tuning and task fine-tuning of this model with the
    same settings (default: the demo's random init exported at `models/base`); null: not trained."""

    def start_of(self, start: Start) -> tuple[str, str, str, str]:
        """(model, instruct output, task output prefix, run-name prefix) of `pretrained` or `base`."""
        if start == "pretrained":
            return self.model, self.instruct_output, self.task_output_prefix, ""
        if start == "base" and self.base is not None:
            return self.base.model, self.base.instruct_output, self.base.task_output_prefix, "base-"
        raise ValueError(f"unknown fine-tune start {start!r}" + ("; finetune.base is null" if start == "base" else ""))

    def external_of(self, start: Start) -> tuple[bool, str]:
        """Whether `start`'s model is an external one (no manifest, opted in), and the param that says so."""
        if start == "base" and self.base is not None:
            return self.base.model_external, "finetune.base.model_external"
        return self.model_external, "finetune.model_external"

    def run_name(self, mode: Literal["instruct", "task"], task: str | None = None, start: Start = "pretrained") -> str:
        """`instruct` or the task name, `base-` in front for the base start (names checkpoints, metrics and plots)."""
        prefix = self.start_of(start)[3]
        if mode == "instruct":
            return f"{prefix}instruct"
        if task not in self.tasks:
            raise ValueError(f"unknown fine-tune task {task!r}; finetune.tasks has {sorted(self.tasks)}")
        return f"{prefix}{task}"

    def seeds_of(self, task: str) -> list[int | None]:
        """The seeds of a task's fine-tunes; `[None]`: one run with the top-level seed, no seed folders."""
        seeds = self.tasks[task].seeds
        return [None] if seeds is None else list(seeds)

    def run_paths(
        self,
        mode: Literal["instruct", "task"],
        task: str | None = None,
        start: Start = "pretrained",
        seed: int | None = None,
    ) -> RunPaths:
        """Output, checkpoint, metrics and plot paths of one run (`seed`: a run of a task's seed list)."""
        name = self.run_name(mode, task, start)
        _, instruct_out, task_prefix, prefix = self.start_of(start)
        if mode == "instruct":
            return RunPaths(
                name,
                instruct_out,
                f"{self.checkpoints}/{name}",
                f"{self.metrics_prefix}{name}.json",
                f"{self.plots}/{name}",
            )
        sub = "" if seed is None else f"/seed-{seed}"
        # The seeds of a task share its checkpoint folder (their run ids differ) and its metrics file.
        return RunPaths(
            name,
            f"{task_prefix}{task}{sub}",
            f"{self.checkpoints}/{prefix}task-{task}",
            f"{self.metrics_prefix}{name}.json",
            f"{self.plots}/{name}{sub}",
        )

    def engine_config(
        self,
        pretrain: PretrainConfig,
        mode: Literal["instruct", "task"],
        task: str | None,
        n_examples: int,
        start: Start = "pretrained",
        seed: int | None = None,
    ) -> PretrainConfig:
        """The engine config of one fine-tune run: `pretrain`'s `INHERITED` keys (device, dtypes, sharding,
        compile, logging, keep-K) with this mode's optimiser, batch, step count, sequence length and paths.
        The token stream's keys stay at their defaults: a fine-tune reads its SFT dataset instead.

        Validated as a whole (`model_validate`), so a wrong key or value fails here, not later. The
        model to start from is `start`'s (the caller sets `model.base` to it); `tokenizer` is the same
        folder, whose tokenizer files the export copies. Raises pydantic's ValidationError.
        """
        hp = self.instruct if mode == "instruct" else self.task
        paths = self.run_paths(mode, task, start, seed)
        replaced = {
            "optim": hp.optim.model_dump(),
            "global_batch_size": hp.global_batch_size,
            "micro_batch_size": hp.micro_batch_size,
            "max_steps": hp.steps(n_examples),
            # map-style SFT datasets under the Trainer's sampler: shuffled, no worker replay (evaluation/main.py:150)
            "max_seq_length": self.max_length,
            "shuffle": True,
            "released_loader": None,
            "document_order": "subset_major",  # the SFT examples have no subsets; keeps the run id of pretrain's order
            "added_tokens": 1 if self.pad_token == "released" else 0,
            "checkpoint_every": self.checkpoint_every,
            "checkpoint_dir": paths.checkpoint_dir,
            "tokenizer": self.start_of(start)[0],
            "output": paths.output,
            "metrics": paths.metrics,
            "plots": paths.plots,
            "export_init": None,
        }
        if hp.loss_weighting is not None:
            replaced["loss_weighting"] = hp.loss_weighting
        inherited = {k: v for k, v in pretrain.model_dump().items() if k in self.INHERITED}
        return PretrainConfig.model_validate({**inherited, **replaced})
