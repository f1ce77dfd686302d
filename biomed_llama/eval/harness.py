"""The lm-eval wrapper: which (model, suite, task, shots) runs to make, the HF backend's arguments, one run.

Every run goes through lm-eval's own `simple_evaluate` with the stock `HFLM` backend and the
task folders prepare-eval rendered, so `lm_eval --model hf --model_args <hf_model_args_string>
--include_path <out>/tasks --tasks <task> --num_fewshot <k>` gives the same numbers.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomed_llama.errors import UserError
from biomed_llama.eval.config import MC_TASKS, PPL_TASKS, EvalConfig
from biomed_llama.eval.prepare import task_name

# Tasks of each suite (instruct: the instructed table's three columns).
SUITE_TASKS = {
    "seed": PPL_TASKS + MC_TASKS,
    "modern": MC_TASKS,
    "instruct": ("medqa4", "medmcqa", "pubmedqa"),
    "finetune": MC_TASKS,
}
# Suites whose few-shot setting is run (instruct and fine-tune rows are zero-shot by definition).
FEWSHOT_SUITES = ("seed", "modern")
# The metrics kept per output type (lm-eval reports them as "<metric>,<filter>").
KEPT_METRICS = ("acc", "acc_norm", "word_perplexity", "byte_perplexity", "bits_per_byte", "exact_match")


@dataclass(frozen=True)
class Run:
    """One lm-eval call: a model, a suite's task, a number of few-shot examples."""

    model: str
    suite: str
    task: str
    shots: int

    @property
    def key(self) -> str:
        """The prefix of this run's metric names, e.g. `seed.medqa4.3shot`."""
        return f"{self.suite}.{self.task}.{self.shots}shot"

    @property
    def lm_eval_task(self) -> str:
        """The lm-eval task name, e.g. `biomed_seed_medqa4`."""
        return task_name(self.suite, self.task)


def plan_runs(cfg: EvalConfig) -> list[Run]:
    """Every run the config asks for, grouped by model (in config order)."""
    runs = []
    for name, m in cfg.models.items():
        for suite in m.suites:
            for task in SUITE_TASKS[suite]:
                if m.tasks is not None and task not in m.tasks:
                    continue
                shots = [0] if "zero" in cfg.shots or suite not in FEWSHOT_SUITES else []
                if "few" in cfg.shots and suite in FEWSHOT_SUITES and task in cfg.fewshot:
                    shots.append(cfg.fewshot[task])
                runs += [Run(name, suite, task, k) for k in shots]
    return runs


def hf_model_args(cfg: EvalConfig, path: str) -> dict[str, Any]:
    """The HFLM arguments matching the original harness: no BOS, EOS as the prefix token, max_length.

    lm-eval 0.4's HFLM uses BOS as the rolling-window / empty-context prefix when the tokenizer
    has one; v0.3 used EOS (its `eot_token_id`), so `prefix_token_id` is set explicitly.
    """
    from transformers import AutoTokenizer

    eos = AutoTokenizer.from_pretrained(path).eos_token_id
    return {"pretrained": path, "dtype": cfg.dtype, "device": cfg.device, "batch_size": cfg.batch_size,
            "max_length": cfg.max_length, "add_bos_token": False, "prefix_token_id": eos}


def model_args_string(args: dict[str, Any]) -> str:
    """`--model_args` for the stock lm_eval CLI (batch size and device go to `--batch_size`, `--device`)."""
    return ",".join(f"{k}={v}" for k, v in args.items() if k not in ("batch_size", "device"))


def lm_eval_command(cfg: EvalConfig, path: str, run: Run, output_path: str) -> list[str]:
    """The stock `lm_eval` command line that reproduces `run` (used by the tests and printed for users).

    With `pair_encoding: separate` the model name is `biomed-hf-v03`: run it through
    `python -c "import biomed_llama.eval.v03_model as m; m.cli()"` instead of `lm_eval`."""
    args = hf_model_args(cfg, path)
    model = "hf" if cfg.pair_encoding == "joint" else "biomed-hf-v03"
    cmd = ["lm_eval", "--model", model, "--model_args", model_args_string(args), "--tasks", run.lm_eval_task,
           "--num_fewshot", str(run.shots), "--batch_size", str(cfg.batch_size), "--device", cfg.device,
           "--include_path", str(Path(cfg.output) / "tasks"), "--output_path", output_path, "--log_samples"]
    return cmd + (["--limit", str(cfg.limit)] if cfg.limit else [])


def load_lm(args: dict[str, Any], pair_encoding: str = "joint"):
    """Build lm-eval's stock HF backend from `hf_model_args` (or the same keys with a model object);
    `pair_encoding="separate"` gives the v0.3-encoding subclass instead."""
    if pair_encoding == "separate":
        from biomed_llama.eval.v03_model import HFLMv03 as cls
    else:
        from lm_eval.models.huggingface import HFLM as cls
    return cls(**args)


def task_manager(tasks_dir: str | Path):
    """A TaskManager over the rendered task folder only (skips indexing lm-eval's built-in tasks)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(tasks_dir), include_defaults=False)


def run_one(lm, tm, run: Run, limit: int | None = None) -> dict[str, Any]:
    """Evaluate one run with `simple_evaluate` (per-sample logs kept); return lm-eval's results dict."""
    from lm_eval import simple_evaluate

    t0 = time.perf_counter()
    res = simple_evaluate(model=lm, tasks=[run.lm_eval_task], num_fewshot=run.shots, task_manager=tm,
                          log_samples=True, limit=limit)
    if res is None:  # lm-eval returns results on rank 0 only
        raise UserError(f"{run.lm_eval_task}: lm-eval returned no results: run `evaluate` as one process "
                        f"(not under torchrun or accelerate launch)")
    res["biomed_wall_s"] = time.perf_counter() - t0
    return res


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
        json.dumps(results, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")
