"""Params of benchmark preparation (`prepare-eval`) and evaluation (`evaluate`, `report`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from biomed_llama.schema import StrictModel

SUITES = ("seed", "instruct", "instruct_letters", "modern", "finetune")
# Suites scored by greedy generation and exact match (the original's `evaluation/main.py`), not by lm-eval.
GEN_SUITES = ("instruct", "finetune")
TABLE_METRICS = "table"
"""A name no model may take (nor `random`): `table.json` held the table's cells in `metrics_dir` until they
moved to `eval.table_metrics`; kept reserved so that a file of an earlier run is never read as a model's."""
# The model types whose forward takes the packed rows of `eval.backend: packed` (eval/packed_lm.py); any other
# is scored by lm-eval's stock HF code. GPT-2 (BioMedLM) and GPT-Neo take position ids and a 4D additive mask
# as LLaMA does; GPT-Neo's local-window layers get the window in position ids (eval/packing.py).
PACKABLE_MODEL_TYPES = ("llama", "gpt2", "gpt_neo")
MC_TASKS = ("medqa4", "medqa5", "medmcqa", "pubmedqa")
PPL_TASKS = ("pubmed_a", "pubmed_c")
# The MC tasks whose seed-suite few-shot examples come from a train file, and the key naming it.
POOL_KEYS = {"medqa4": "medqa4_train", "medqa5": "medqa5_train", "medmcqa": "medmcqa_train"}


class BenchmarkFiles(StrictModel):
    """The benchmark files in the formats they are published in (paths relative to the repo root).

    How they are parsed (MedMCQA's `cop` convention) is the top-level `readers` section. The defaults are
    the demo's fixtures; a profile names its own files, and every path must lie under `inputs.benchmarks`
    (checked where a params file is loaded), so a default never stands in for a profile's file unnoticed.
    A few-shot pool set to null makes a seed-suite few-shot run of its task a ConfigError naming the key,
    never a silent fall-back to other files.
    """

    medqa4_test: str = "data/sample/eval/medqa/US/4_options/phrases_no_exclude_test.jsonl"
    """MedQA-USMLE 4-option test set (JSON lines with `question`, `answer`, `options` {A..D}, `answer_idx`)."""
    medqa4_train: str | None = "data/sample/eval/medqa/US/4_options/phrases_no_exclude_train.jsonl"
    """MedQA-USMLE 4-option train set: the seed suite's few-shot pool (required when its few-shot run is asked for)."""
    medqa5_test: str = "data/sample/eval/medqa/US/test.jsonl"
    """MedQA-USMLE 5-option test set (JSON lines, options {A..E})."""
    medqa5_train: str | None = "data/sample/eval/medqa/US/train.jsonl"
    """MedQA-USMLE 5-option train set: the few-shot pool (required when its few-shot run is asked for)."""
    medmcqa_dev: str = "data/sample/eval/medmcqa/dev.json"
    """MedMCQA validation set as released (JSON lines, `opa`..`opd`, `cop`: see `readers.medmcqa_cop`)."""
    medmcqa_train: str | None = "data/sample/eval/medmcqa/train.json"
    """MedMCQA train set: the few-shot pool (required when its few-shot run is asked for)."""
    medmcqa_test: str | None = None
    """MedMCQA test set as released (JSON lines, answers withheld): read only when `generation.medmcqa_split`
    is `test` and an instruct / finetune run of MedMCQA is asked for."""
    pubmedqa_labeled: str = "data/sample/eval/pubmedqa/ori_pqal.json"
    """PubMedQA `ori_pqal.json` (one object keyed by PMID); all items are the test set (the original's 1,000),
    and its few-shot examples come from it too (the fork's rule for a task without training docs, base.py:716-727)."""
    pile_extracted: str = "data/extracted"
    """The extract stage's output; the Pile **test** split of PubMed Abstracts / Central gives the perplexity rows
    (read, and its manifest verified, only when a model's suites ask for a perplexity task)."""

    def pool(self, task: str) -> tuple[str, str | None]:
        """The few-shot pool of an MC task: `(param key, path or None)`; PubMedQA has none (`("", None)`)."""
        key = POOL_KEYS.get(task)
        return (f"eval.benchmarks.{key}", getattr(self, key)) if key else ("", None)


class GenerationConfig(StrictModel):
    """The `instruct` and `finetune` suites: scored as the original's `evaluation/main.py` (greedy generation, exact match).

    The weights dtype is `eval.dtype` (the original loaded float16 for testing, main.py:87); BOS is
    whatever the model's tokenizer adds by default (the original's datasets tokenized with it)."""

    max_new_tokens: int = Field(16, ge=1)
    """New tokens generated per prompt (the demo's 16: a tiny random model rarely stops early; the original's
    main.py:177: 128, configs/paper.yaml)."""
    batch_size: int = Field(4, ge=1)
    """Prompts per `generate` call, taken in file order (main.py:156-162: batch 4, unshuffled)."""
    padding_side: Literal["left", "right"] = "left"
    """Side a batch's shorter prompts are padded on (main.py:94,122: left for testing)."""
    medmcqa_split: Literal["validation", "test"] = "validation"
    """MedMCQA set of these suites. The original asked for `mode='test'` (main.py:119), i.e. the HF test split,
    whose answers are withheld (`cop` = -1): `options[cop]` (mcqa_dataset.py:56) then makes option D the
    target of every question. `validation` (`benchmarks.medmcqa_dev`, as the seed suite) scores against
    real answers; `test` (`benchmarks.medmcqa_test`) reproduces the released code's option-D targets."""
    finetune_input: Literal["prompt", "prompt_and_target"] = "prompt"
    """What the fine-tuned model is given: `prompt` (the fine-tune prompt, ending `### Answer:`) or
    `prompt_and_target`: as released, the test-time `input_ids` are the tokenized prompt + target
    (mcqa_dataset.py:124-135 keeps `tokenized['input_ids'][0]`, the whole example), so generation starts
    after the gold answer and its `</s>`."""


class GenerationSpeed(StrictModel):
    """How fast the `instruct` / `finetune` rows are generated (`eval.generation_speed`): speed only, so not a DVC
    param of `evaluate` and not in `eval.generation` (each manifest records it). All off (the default) is the
    released loop: batches of `generation.batch_size` (4) in file order, a growing KV cache, no compile.

    The fast setting (`batch_size: 128, sort_by_length: true, static_cache: true, compile: true`) changes no
    prompt, target, pad side, token or stopping rule: each prompt is still left-padded, masked and greedily
    continued on its own. In float32 the outputs are identical (tests/eval/test_generate.py); in float16 /
    bfloat16 other batch shapes take other kernels' rounding, so a near-tie may resolve otherwise: how many
    outputs differ at the paper's size is measured by bench/bench_generate.py (bench/RESULTS.md)."""

    batch_size: int | None = Field(None, ge=1)
    """Prompts per `generate` call; None: `generation.batch_size` (4, as released). A 7B model's static cache holds
    0.5 MB per row and position (fp16): 128 rows × 768 positions (PubMedQA) are 50 GB; lower it on an out-of-memory
    error (the longest prompts come first when sorting, so it fails at once)."""
    sort_by_length: bool = False
    """Batch the prompts longest first (results are put back in file order): less padding per batch."""
    static_cache: bool = False
    """A preallocated KV cache (transformers' `StaticCache`), one per batch shape, reset between batches; the
    last batch is filled up with copies of its last prompt (their outputs dropped) so that every batch has one shape."""
    compile: bool = False
    """`torch.compile` the decode step (transformers' compiled generation, CUDA graphs on a GPU); needs
    `static_cache`. Each new cache shape compiles once per model."""

    @model_validator(mode="after")
    def _check(self) -> GenerationSpeed:
        if self.compile and not self.static_cache:
            raise ValueError(
                "eval.generation_speed.compile needs eval.generation_speed.static_cache: true "
                "(transformers compiles the decode step only over a static cache)"
            )
        return self


FAST_GENERATION = GenerationSpeed(batch_size=128, sort_by_length=True, static_cache=True, compile=True)
"""The labelled fast setting of the generation rows (bench/bench_generate.py measures it beside batch 4)."""


class EvalModel(StrictModel):
    """One model to evaluate and where its cells go in the table."""

    path: str | None
    """A Hugging Face model directory (safetensors + tokenizer), e.g. `models/pretrained`, or a folder of seed
    runs (`seed-<s>/` each a HF directory: mean ± std over them); null: not evaluated, its rows show the
    paper's values as `not measured` (the reference models: name their HF directory here to evaluate them)."""
    paper_row: str
    """The seed table's model this one stands in for (`Random`, `GPT-Neo (2.7B)`, `BioMedLM (2.7B)`, `LLaMA-7B`,
    `PMC-LLaMA-7B`, `BioMed-LLaMA-7B`): its values go beside ours."""
    suites: list[Literal["seed", "instruct", "instruct_letters", "modern", "finetune"]] = Field(["seed"], min_length=1)
    """Suites to run on this model: `seed` (the pretrained rows' method), `instruct` and `finetune` (the
    instructed / fine-tuned rows' method: generation, exact match), `instruct_letters` (NOT the paper's
    method: the instruct prompt's option letter scored by log-likelihood), `modern` (lm-eval built-in style)."""
    tasks: list[Literal["pubmed_a", "pubmed_c", "medqa4", "medqa5", "medmcqa", "pubmedqa"]] | None = None
    """Restrict to these tasks (e.g. a task fine-tune evaluates only its own task); None: every task of each suite."""
    external: bool = False
    """True for a model that no stage here made (a downloaded LLaMA-7B, GPT-Neo, …) and so has no manifest:
    its files are hashed into the eval outputs' manifest instead of verified. A model without a manifest
    and without this opt-in is refused (exit 3): a stage output whose manifest was deleted is not trusted."""


def _demo_models() -> dict[str, EvalModel]:
    """The demo's models (params.yaml's `eval.models`), fresh instances each call: `EvalConfig.models`' default."""
    ours, base = "BioMed-LLaMA-7B", "LLaMA-7B"
    return {
        "pretrained": EvalModel(path="models/pretrained", paper_row=ours, suites=["seed", "modern"]),
        "instruct": EvalModel(path="models/instruct", paper_row=ours, suites=["instruct"]),
        "ft-medqa": EvalModel(path="models/ft-medqa", paper_row=ours, suites=["finetune"], tasks=["medqa4"]),
        "ft-medmcqa": EvalModel(path="models/ft-medmcqa", paper_row=ours, suites=["finetune"], tasks=["medmcqa"]),
        "ft-pubmedqa": EvalModel(path="models/ft-pubmedqa", paper_row=ours, suites=["finetune"], tasks=["pubmedqa"]),
        "base": EvalModel(path="models/base", paper_row=base, suites=["seed"]),
        "base-instruct": EvalModel(path="models/base-instruct", paper_row=base, suites=["instruct"]),
        "base-ft-medqa": EvalModel(path="models/base-ft-medqa", paper_row=base, suites=["finetune"], tasks=["medqa4"]),
        "base-ft-medmcqa": EvalModel(
            path="models/base-ft-medmcqa", paper_row=base, suites=["finetune"], tasks=["medmcqa"]
        ),
        "base-ft-pubmedqa": EvalModel(
            path="models/base-ft-pubmedqa", paper_row=base, suites=["finetune"], tasks=["pubmedqa"]
        ),
        # The seed's other models: not evaluated until a profile names their HF directory as `path`.
        "gpt-neo-2.7b": EvalModel(path=None, paper_row="GPT-Neo (2.7B)", suites=["seed"]),
        "biomedlm-2.7b": EvalModel(path=None, paper_row="BioMedLM (2.7B)", suites=["seed"]),
        "pmc-llama-7b": EvalModel(path=None, paper_row="PMC-LLaMA-7B", suites=["seed"]),
    }


class EvalConfig(StrictModel):
    """Benchmark files, models to evaluate, suites and shot settings."""

    # Batching of the log-likelihood backends (the same per-item numbers, to float rounding) and the display.
    SPEED_ONLY: ClassVar[frozenset[str]] = frozenset({"batch_size", "token_budget", "workers", "progress"})

    benchmarks: BenchmarkFiles = Field(default_factory=BenchmarkFiles)
    """Where the published benchmark files are."""
    output: str = "data/eval"
    """prepare-eval output: task JSON-lines files, rendered lm-eval task YAMLs (`tasks/`), manifest.json."""
    ppl_max_docs: int | None = Field(None, ge=1)
    """Use only the first N test documents of each PubMed subset for perplexity (None: all)."""
    models: dict[str, EvalModel] = Field(default_factory=_demo_models)
    """Models to evaluate, by name (the name names `metrics/eval/<name>.json`); default: the demo's rows."""
    shots: list[Literal["zero", "few"]] = Field(["zero", "few"], min_length=1)  # pydantic copies a mutable default
    """Shot settings of the `seed` and `modern` suites: zero-shot and/or the table's few-shot counts."""
    fewshot: dict[Literal["medqa4", "medqa5", "medmcqa", "pubmedqa"], int] = Field(
        {"medqa4": 3, "medqa5": 3, "medmcqa": 10, "pubmedqa": 1}
    )
    """Few-shot counts per task (the table's 3, 3, 10, 1)."""
    fewshot_seed: int = 42
    """Seed of the fork's example selection (`random.Random(42)`, fork evaluator.py:231-233)."""
    dtype: Literal["float16", "bfloat16", "float32", "auto"] = "float32"
    """Weights dtype for evaluation (the CPU demo: float32; the original: float16, configs/paper.yaml)."""
    device: str = "cpu"
    """Torch device for the HF backend (`cuda`, `cuda:0`, `cpu`; the demo: cpu, configs/paper.yaml: cuda)."""
    batch_size: int | Literal["auto"] = 8
    """lm-eval batch size of the `stock` backend (and of the printed stock CLI line), or `auto` to probe (the
    demo: 8, configs/paper.yaml: auto)."""
    max_length: int = Field(2048, ge=16)
    """Context length of the harness (rolling perplexity windows and truncation); the original's 2048."""
    backend: Literal["packed", "stock"] = "packed"
    """Log-likelihood engine: `packed` scores each shared context once for all of its continuations and
    batches by `token_budget` (eval/packed_lm.py); `stock` is lm-eval's HF backend unchanged. Both encode
    pairs by the fork's rule and give the same per-item log-likelihoods (to float rounding)."""
    token_budget: int = Field(8192, ge=64)
    """`packed`: tokens per forward pass (rows × padded length; the demo: 8,192, configs/paper.yaml: 32,768); lower
    it on an out-of-memory error."""
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    """The `instruct` and `finetune` suites' generation settings (the original's values by default, but the demo's
    `max_new_tokens`)."""
    generation_speed: GenerationSpeed = Field(default_factory=GenerationSpeed)
    """Speed-only settings of the generation rows (larger batches, static KV cache, compile); default: as released.
    Not a DVC param (changing it reruns nothing); recorded in the eval manifests."""
    workers: int = Field(1, ge=1)
    """Worker processes that evaluate the (model member, suite) units concurrently (1: every run in this process, one
    after the other). Each loads its own copy of its model, so on one GPU they share the card: size it to memory (the
    paper's 7B needs ~13.5 GB in float16 per worker). The numbers are the same for any count (each run is scored as
    in one process); what it speeds up is lm-eval's CPU-side work (building requests, tokenizing, few-shot contexts),
    which a small model on a GPU waits on."""
    limit: int | None = Field(None, ge=1)
    """Evaluate only the first N documents of each task (debugging; None: all, as the table)."""
    mc_metric: Literal["acc", "acc_norm"] = "acc"
    """Which multiple-choice metric the table shows (both are always stored)."""
    random_baseline: bool = True
    """Compute the Random row: the chance accuracy of each prepared test set (`metrics/eval/random.json`)."""
    contamination: str | None = "data/contamination"
    """The `contamination` stage's output (its `output`): when it holds one, every multiple-choice cell also gets
    its value on the uncontaminated test items and their count (`<key>_clean`, `<suite>.<task>.<N>shot.clean_items`);
    null or absent: full-set cells only."""
    metrics_dir: str = "metrics/eval"
    """Flat per-model metrics JSON files and the Random row (a DVC output; `report` renders from them)."""
    table_metrics: str = "metrics/table.json"
    """The table's measured cells as `section/model/method/ours/task` (the DVC metrics `dvc metrics diff` compares);
    outside `metrics_dir`, which DVC tracks as one output folder."""
    results_dir: str = "reports/eval"
    """lm-eval's full results and per-sample logs, one folder per model."""
    table: str = "reports/table.md"
    """The rendered results table (seed layout, paper values beside measured cells)."""
    figure: str = "reports/loss.png"
    """The training-loss figure `evaluate` (and `report`) draws from the DVC plots data, like the seed's training curve."""
    loss_plots: dict[str, str] = Field(
        default_factory=lambda: {"pretrain": "plots/pretrain/loss.tsv", "instruct": "plots/finetune/instruct/loss.tsv"}
    )
    """Loss TSVs (DVCLive format: `step` + a value column) per training stage, drawn by `report`."""
    progress: bool = True
    """Show a rich progress display over the (model, suite, shots, task) runs (with `workers` > 1: one line per
    finished unit)."""

    @model_validator(mode="after")
    def _check(self) -> EvalConfig:
        for name in self.models:
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"model name {name!r} must be a plain file name")
            if name in ("random", TABLE_METRICS):
                raise ValueError(f"model name {name!r} is taken by the table's own metrics files")
        return self
