"""What `evaluate` adds around the harness runs: a model's seed members, their mean ± std, chance accuracy.

- A task fine-tune with a seed list (`finetune.tasks.<task>.seeds`) exports one HF model per seed in
  `<folder>/seed-<seed>/`; `model_members` finds them and `combine_members` writes each seed's
  metrics under `seed-<seed>/<key>`, and under `<key>` their mean, with `<key>_std` (sample standard
  deviation, n - 1; the seed's `0.3946±0.008` does not say which) and `<key>_n`.
- `chance_accuracy`: the Random row, computed rather than quoted: the expected accuracy of a uniform
  guess over each prepared test set's options (mean of 1 / number of options), as `random.<task>.0shot.acc`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from biomed_llama.errors import UserError
from biomed_llama.eval.config import MC_TASKS


def model_members(name: str, path: str) -> list[tuple[str, Path]]:
    """`[("", path)]` for a HF model folder, `[("seed-<s>", path/seed-<s>), …]` for a folder of seed runs."""
    p = Path(path)
    if (p / "config.json").is_file():
        return [("", p)]
    seeds = sorted(d for d in p.glob("seed-*") if (d / "config.json").is_file()) if p.is_dir() else []
    if not seeds:
        raise UserError(f"eval.models.{name}: {path} is not a HF model folder (no config.json, no seed-*/ models); "
                        "run the stage that exports it")
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


def chance_accuracy(prepared: str | Path) -> dict[str, float]:
    """`random.<task>.0shot.acc` = mean over the test documents of 1 / len(options), for each prepared MC task."""
    out = {}
    for task in MC_TASKS:
        path = Path(prepared) / f"{task}.test.jsonl"
        if not path.is_file():
            continue
        docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if docs:
            out[f"random.{task}.0shot.acc"] = sum(1.0 / len(d["options"]) for d in docs) / len(docs)
    return out
