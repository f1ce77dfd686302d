"""What `evaluate` adds around the harness runs: a model's seed members, their mean ± std, chance accuracy.

- A task fine-tune with a seed list (`finetune.tasks.<task>.seeds`) exports one HF model per seed in
  `<folder>/seed-<seed>/`; `model_members` finds them and `combine_members` writes each seed's
  metrics under `seed-<seed>/<key>`, and under `<key>` their mean, with `<key>_std` (sample standard
  deviation, n - 1; the seed's `0.3946±0.008` does not say which) and `<key>_n`.
- `chance_accuracy`: the Random row, computed rather than quoted: the expected accuracy of a uniform
  guess over each prepared test set's options (mean of 1 / number of options), as `random.<task>.0shot.acc`.
- `clean_metrics`: a multiple-choice run's metric over the test items the `contamination` stage found no
  n-gram of in the pretraining corpus, as `<key>_clean`, with their count as `<suite>.<task>.<N>shot.clean_items`
  (the Random row's too). Named so that `combine_members`' `_n` / `_std` (seeds) never clash with the count.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from biomed_llama.errors import UserError
from biomed_llama.eval.config import GEN_SUITES, MC_TASKS

CLEAN = "_clean"  # suffix of a metric over the uncontaminated items
CLEAN_ITEMS = "clean_items"  # how many uncontaminated items a run scored
MC_METRICS = ("acc", "acc_norm", "exact_match")  # the per-item metrics a clean subset is scored with


def model_members(name: str, path: str) -> list[tuple[str, Path]]:
    """`[("", path)]` for a HF model folder, `[("seed-<s>", path/seed-<s>), …]` for a folder of seed runs."""
    p = Path(path)
    if (p / "config.json").is_file():
        return [("", p)]
    seeds = sorted(d for d in p.glob("seed-*") if (d / "config.json").is_file()) if p.is_dir() else []
    if not seeds:
        raise UserError(
            f"eval.models.{name}: {path} is not a HF model folder (no config.json, no seed-*/ models); "
            "run the stage that exports it"
        )
    return [(d.name, d) for d in seeds]


def combine_members(per_member: dict[str, dict[str, float]]) -> dict[str, float]:
    """One model's flat metrics from its members': as is for one unnamed member, else per seed + mean/std/n."""
    if list(per_member) == [""]:
        return per_member[""]
    out: dict[str, float] = {}
    for label, m in per_member.items():
        out.update({f"{label}/{k}": v for k, v in m.items()})
    keys = set.intersection(*(set(m) for m in per_member.values()))
    for k in sorted(keys):
        values = [m[k] for m in per_member.values()]
        mean = sum(values) / len(values)
        out[k] = mean
        out[f"{k}_n"] = float(len(values))
        if len(values) > 1:
            out[f"{k}_std"] = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return out


def chance_accuracy(prepared: str | Path, verdicts: dict[str, dict[int, bool]] | None = None) -> dict[str, float]:
    """`random.<task>.0shot.acc` = mean over the test documents of 1 / len(options), for each prepared MC task;
    with `verdicts` (`contamination.results.contaminated_items`) also over the uncontaminated ones."""
    out = {}
    for task in MC_TASKS:
        path = Path(prepared) / f"{task}.test.jsonl"
        if not path.is_file():
            continue
        docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if docs:
            key = f"random.{task}.0shot"
            out[f"{key}.acc"] = sum(1.0 / len(d["options"]) for d in docs) / len(docs)
            if verdicts is not None and task in verdicts:
                flags = _flags(verdicts, task, [d["idx"] for d in docs], path.as_posix())
                clean = [1.0 / len(d["options"]) for d, bad in zip(docs, flags, strict=True) if not bad]
                out[f"{key}.acc{CLEAN}"] = sum(clean) / len(clean) if clean else float("nan")
                out[f"{key}.{CLEAN_ITEMS}"] = float(len(clean))
    return out


def _flags(verdicts: dict[str, dict[int, bool]], task: str, idxs: list[int], where: str) -> list[bool]:
    """Whether each test item `idx` of `task` is contaminated; an item the verdicts lack is a UserError."""
    known = verdicts[task]
    missing = [i for i in idxs if i not in known]
    if missing:
        raise UserError(
            f"{where}: {task} item {missing[0]} has no contamination verdict (the contamination output "
            f"was made from other benchmark files?): rerun `biomed-llama contamination`"
        )
    return [known[i] for i in idxs]


def sample_idx(sample: dict[str, Any]) -> int:
    """The test item a per-sample record scored: its document's `idx` (lm-eval logs the doc), else `doc_id`."""
    doc = sample.get("doc")
    return int(doc["idx"]) if isinstance(doc, dict) and "idx" in doc else int(sample["doc_id"])


def clean_metrics(
    run_key: str,
    suite: str,
    task: str,
    samples: list[dict[str, Any]],
    full: dict[str, float],
    verdicts: dict[str, dict[int, bool]] | None,
    medmcqa_split: str = "validation",
) -> dict[str, float]:
    """The run's per-item MC metrics (those in `full`, its flat metrics) over its uncontaminated items, and their count.

    Nothing for a perplexity task, for a task the verdicts do not cover, or for the generation suites' MedMCQA on
    the unlabeled test split (`medmcqa_split: test`), whose items are not the validation items the verdicts name.
    """
    if (
        verdicts is None
        or task not in verdicts
        or (suite in GEN_SUITES and task == "medmcqa" and medmcqa_split == "test")
    ):
        return {}
    flags = _flags(verdicts, task, [sample_idx(s) for s in samples], run_key)
    kept = [s for s, bad in zip(samples, flags, strict=True) if not bad]
    out = {f"{run_key}.{CLEAN_ITEMS}": float(len(kept))}
    for metric in MC_METRICS:
        if f"{run_key}.{metric}" in full:
            out[f"{run_key}.{metric}{CLEAN}"] = (
                (sum(float(s[metric]) for s in kept) / len(kept)) if kept else float("nan")
            )
    return out
