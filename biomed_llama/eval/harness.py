"""The lm-eval wrapper: the HF backend's arguments and one run (which runs to make: eval/plan.py).

Every log-likelihood run goes through lm-eval's own `simple_evaluate` over the task folders
prepare-eval rendered, with lm-eval's HF backend (`eval.backend: stock`) or its subclass that
scores each shared context once (`packed`, eval/packed_lm.py); either way `lm_eval --model hf
--model_args <model_args_string> --include_path <out>/tasks --tasks <task> --num_fewshot <k>`
gives the same numbers. The `instruct` and `finetune` suites are not lm-eval runs (eval/generate.py).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from biomed_llama.errors import UserError
from biomed_llama.eval.config import GEN_SUITES, PACKABLE_MODEL_TYPES, EvalConfig
from biomed_llama.eval.plan import Run, plan_runs  # noqa: F401  (plan_runs: harness.plan_runs, what to run)

# Lazy imports: transformers and lm_eval (seconds to import) are imported where a model is scored; `packed_lm` imports
# lm_eval at its top, so it is imported there too.

# Suites scored without BOS: the fork ran the pretrained rows so (evaluation.sh runs `hf-causal-experimental`,
# whose tok_encode passes add_special_tokens=False for causal models: fork lm_eval/models/huggingface.py:373-385,
# 437-439). Every other suite gets the tokenizer's default.
NO_BOS_SUITES = ("seed",)
# The metrics kept per output type (lm-eval reports them as "<metric>,<filter>").
KEPT_METRICS = ("acc", "acc_norm", "word_perplexity", "byte_perplexity", "bits_per_byte", "exact_match")


def _hf_config(path: str | Path) -> dict[str, Any]:
    """A HF model directory's `config.json` ({} without one)."""
    cfg_file = Path(path) / "config.json"
    return json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}


def packable(path: str | Path) -> bool:
    """Whether the model in `path` is of a type the packed backend packs (its attention is checked when loaded)."""
    return _hf_config(path).get("model_type") in PACKABLE_MODEL_TYPES


def model_positions(path: str) -> int | None:
    """The size of a HF model directory's learned position table (GPT-2's `n_positions` / `n_ctx`), or None.

    `eval.max_length` is capped at it: BioMedLM (GPT-2, 1,024 positions) fed 2,048-token perplexity windows
    fails with an index error in its position embedding (found by bench/e2e.sh's stand-in). LLaMA's rotary
    positions have no table (its `max_position_embeddings` is no limit), so a LLaMA is never capped.
    """
    return config_positions(_hf_config(path))


def config_positions(config: dict[str, Any]) -> int | None:
    """`model_positions` of a HF config as a dict (`config.json`'s keys, or a loaded config's `to_dict()`)."""
    for key in ("n_positions", "n_ctx"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def hf_model_args(cfg: EvalConfig, path: str, suite: str | None = None) -> dict[str, Any]:
    """The HFLM arguments: EOS as the prefix token, max_length, and for `suite` its BOS setting (the seed
    suite: `add_bos_token=False`; others: the tokenizer's default). `suite=None` leaves BOS to `set_suite`.

    lm-eval 0.4's HFLM uses BOS as the rolling-window / empty-context prefix when the tokenizer
    has one; the fork used EOS (its `eot_token_id`, base.py:215-219,246), so `prefix_token_id` is set.
    """
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(path).eos_token_id
    args = {
        "pretrained": path,
        "dtype": cfg.dtype,
        "device": cfg.device,
        "batch_size": cfg.batch_size,
        "max_length": min(cfg.max_length, model_positions(path) or cfg.max_length),
        "prefix_token_id": eos,
    }
    return {**args, "add_bos_token": False} if suite is not None and suite in NO_BOS_SUITES else args


def model_args_string(args: dict[str, Any]) -> str:
    """`--model_args` for the stock lm_eval CLI (batch size and device go to `--batch_size`, `--device`)."""
    return ",".join(f"{k}={v}" for k, v in args.items() if k not in ("batch_size", "device"))


def lm_eval_command(cfg: EvalConfig, path: str, run: Run, output_path: str) -> list[str]:
    """The stock `lm_eval` command line that reproduces `run` (used by the tests and printed for users)."""
    assert run.suite not in GEN_SUITES, "instruct / finetune runs are scored by eval/generate.py, not lm-eval"
    args = hf_model_args(cfg, path, run.suite)
    cmd = [
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        model_args_string(args),
        "--tasks",
        run.lm_eval_task,
        "--num_fewshot",
        str(run.shots),
        "--batch_size",
        str(cfg.batch_size),
        "--device",
        cfg.device,
        "--include_path",
        str(Path(cfg.output) / "tasks"),
        "--output_path",
        output_path,
        "--log_samples",
    ]
    return cmd + (["--limit", str(cfg.limit)] if cfg.limit else [])


def load_lm(args: dict[str, Any], backend: str = "packed", token_budget: int = 32768):
    """Build the HF backend from `hf_model_args` (or the same keys with a model object): lm-eval's own
    HFLM (`stock`) or the context-sharing `PackedHFLM` (`packed`)."""
    if backend == "stock":
        from lm_eval.models.huggingface import HFLM

        return HFLM(**args)
    from biomed_llama.eval.packed_lm import PackedHFLM

    return PackedHFLM(token_budget=token_budget, **args)


def set_suite(lm, suite: str) -> None:
    """Point a loaded backend at a suite: no BOS for the seed suite, the tokenizer's default otherwise.

    HFLM reads `add_bos_token` at every encode (None: the tokenizer decides), so one loaded model
    serves every suite when it was loaded without `add_bos_token` (`hf_model_args(cfg, path)`)."""
    lm.add_bos_token = False if suite in NO_BOS_SUITES else None


def task_manager(tasks_dir: str | Path):
    """A TaskManager over the rendered task folder only (skips indexing lm-eval's built-in tasks)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir), include_defaults=False)


def run_one(lm, tm, run: Run, limit: int | None = None) -> dict[str, Any]:
    """Evaluate one run with `simple_evaluate` (per-sample logs kept); return lm-eval's results dict."""
    from lm_eval import simple_evaluate

    _environment_report_once()
    t0 = time.perf_counter()
    res = simple_evaluate(
        model=lm, tasks=[run.lm_eval_task], num_fewshot=run.shots, task_manager=tm, log_samples=True, limit=limit
    )
    if res is None:  # lm-eval returns results on rank 0 only
        raise UserError(
            f"{run.lm_eval_task}: lm-eval returned no results: run `evaluate` as one process "
            f"(not under torchrun or accelerate launch)"
        )
    res["biomed_wall_s"] = time.perf_counter() - t0
    res["biomed_backend"] = scoring_backend(lm)
    return res


def _environment_report_once() -> None:
    """Have torch's environment report, which `simple_evaluate` adds to every run's results (`pretty_env_info`),
    made once per process instead of once per run: it runs `pip list`, `nvidia-smi` and the like in subprocesses,
    0.5 s a run on a 2-core CPU machine, 4 s of a seed suite's 8 multiple-choice runs, on the CPU while a GPU
    waits. The report cannot change within a process; every results.json holds the same text as before. (The
    cache replaces torch's function for the whole process; lm-eval looks it up at each call, so it gets this one.)"""
    from torch.utils import collect_env

    if not hasattr(collect_env.get_pretty_env_info, "cache_info"):
        collect_env.get_pretty_env_info = functools.cache(collect_env.get_pretty_env_info)


def scoring_backend(lm) -> str:
    """Which code scored a run's log-likelihoods: `packed` (PackedHFLM packing this model) or `stock` (lm-eval's
    HFLM, or PackedHFLM falling back to it for a model it does not pack). Saved in `<key>.results.json` and named
    in evaluate's progress lines, so a GPU log shows which path each model took, not only the CPU tests."""
    return "packed" if getattr(lm, "packable", False) else "stock"


def flat_metrics(run: Run, results: dict[str, Any]) -> dict[str, float]:
    """The run's metrics as flat `suite.task.Nshot.metric` keys (stderr and aliases dropped)."""
    out = {}
    for key, value in results["results"][run.lm_eval_task].items():
        metric, _, _filter = key.partition(",")
        if metric in KEPT_METRICS and isinstance(value, (int, float)):
            out[f"{run.key}.{metric}"] = float(value)
    return out


def save_run(folder: Path, run: Run, results: dict[str, Any]) -> None:
    """Write lm-eval's full results (`<key>.results.json`) and per-sample log (`<key>.samples.jsonl`)."""
    from lm_eval.utils import handle_non_serializable

    folder.mkdir(parents=True, exist_ok=True)
    samples = results.pop("samples", {}).get(run.lm_eval_task, [])
    with (folder / f"{run.key}.samples.jsonl").open("w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s, default=handle_non_serializable, ensure_ascii=False) + "\n")
    (folder / f"{run.key}.results.json").write_text(
        json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n"
    )
