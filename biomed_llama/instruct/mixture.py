"""The instruction mixture: read every source, weight it, draw N records with a seed, write them.

Weighting (the original's `evaluation/instruct_dataset.py:27-60`): a source's weight is its sample
count × its epoch factor; its share is the weight over the sum of weights. The released code lists
20 sources with their own factors (`instruct_dataset.py:33-54`, correction 7 of REPRODUCTION.md);
each source may name the seed table's row it is counted in (`group`), and the metrics give both.

Drawing N records (`instruct_mix.allocation`):
- `released` (the released code, `instruct_dataset.py:70-77`): `random.choices` over the sources
  with those weights, N times, then `random.choice` of a record within each drawn source, in that
  order, from one `random.Random(seed)`. In one process, `random.seed(seed)` before the original's
  code draws exactly this mixture. The released run did not: main.py ran on 8 ranks
  (evaluation/train.sh:21) and each built its own `InstructDataset` (main.py:126-133) with the
  unseeded global generator (HF's `set_seed` comes later, in `Trainer.__init__`, main.py:150), so
  each rank drew its own 150,000 records and trained on the sampler's eighth of them. Every record
  of a draw is independent and alike in distribution, so those eight partial draws are distributed
  as one draw: the package makes one, seeded, and cannot match the release's records. Records
  repeat and per-source counts vary around N × share; the records stay in draw order (the trainer
  shuffles them).
- `proportional` (the package's earlier method, an alternative): per-source counts by
  largest-remainder rounding of N × share (ties to the source listed first), so the drawn
  percentages equal the weights up to one record; within a source ⌊c / n⌋ full passes, each a
  fresh permutation, then c mod n distinct records (a factor ≤ 1 never repeats a record); the whole
  mixture is shuffled once. Seeded numpy `Generator(PCG64(seed))`, used in that fixed order.
- `multinomial`: one multinomial draw of the per-source counts over the shares (the distribution
  of the released counts), then records as `proportional`.
The same sources, params and seed give the same mixture bytes on any machine.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.benchmarks.readers import CopConvention
from biomed_llama.benchmarks.records import BadRecord, BadRecords
from biomed_llama.errors import UserError
from biomed_llama.fsutil import atomic_dir, atomic_write_bytes
from biomed_llama.instruct.config import Allocation, InstructMixConfig, InstructSource
from biomed_llama.instruct.readers import read_source
from biomed_llama.instruct.templates import render_instruct
from biomed_llama.provenance import require_verified, write_manifest
from biomed_llama.stage_metrics import write_metrics

MIXTURE_FILE = "mixture.jsonl"
BAD_FILE = "bad_records.jsonl"
# What `dvc metrics show` lists; the per-source and per-group statistics go to the details file beside it.
HEADLINE = ("n_records", "seed", "allocation", "bad_records")


def source_shares(counts: dict[str, int], epochs: dict[str, float]) -> dict[str, float]:
    """Return each source's share of the mixture: count × epoch factor over the sum (sums to 1)."""
    weights = {name: counts[name] * epochs[name] for name in counts}
    total = sum(weights.values())
    if total <= 0:
        raise UserError("instruction mixture: every source is empty")
    return {name: w / total for name, w in weights.items()}


def mixture_percentages(counts: dict[str, int], epochs: dict[str, float]) -> dict[str, float]:
    """Return the MixtureP column: each source's share in percent."""
    return {name: 100.0 * s for name, s in source_shares(counts, epochs).items()}


def allocate(
    n: int, shares: dict[str, float], rng: np.random.Generator, method: Literal["proportional", "multinomial"]
) -> dict[str, int]:
    """Split `n` records over sources by their shares (see the module docstring); counts sum to `n`."""
    names = list(shares)
    p = np.array([shares[k] for k in names], dtype=np.float64)
    if method == "multinomial":
        counts = rng.multinomial(n, p / p.sum())
    else:
        exact = n * p / p.sum()
        counts = np.floor(exact).astype(np.int64)
        # Largest remainders get the leftover records; a stable sort keeps ties in listed order.
        order = np.argsort(-(exact - counts), kind="stable")
        counts[order[: n - int(counts.sum())]] += 1
    return {k: int(c) for k, c in zip(names, counts, strict=True)}


def draw_indices(n_available: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Pick `count` record indices of a source of `n_available`: full permutations, then a partial one."""
    if n_available <= 0 and count > 0:
        raise UserError(f"cannot draw {count} records from an instruction source with no records")
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    full, rest = divmod(count, n_available)
    parts = [rng.permutation(n_available) for _ in range(full)]
    parts.append(rng.choice(n_available, size=rest, replace=False))
    return np.concatenate(parts).astype(np.int64)


@dataclass
class SourceRecords:
    """One source read and rendered: its `(input, output)` pairs in file order and its bad records."""

    source: InstructSource
    pairs: list[tuple[str, str]]
    bad: list[BadRecord] = field(default_factory=list)


def read_instruct_source(
    src: InstructSource,
    policy: Literal["skip", "abort"],
    medmcqa_cop: CopConvention = "auto",
    duplicates: Literal["abort", "drop"] = "abort",
) -> SourceRecords:
    """Read all files of a source and render each item with the instruct templates (dropped duplicates are
    listed with the bad records, `readers.duplicates`)."""
    bad = BadRecords(policy, duplicates=duplicates)
    pairs = []
    for path in src.paths:
        for _, item in read_source(src.format, path, bad, cot=src.cot, medmcqa_cop=medmcqa_cop):
            pairs.append(render_instruct(item, cot=src.cot))
    if not pairs:
        raise UserError(f"instruction source {src.name!r} has no valid records ({len(bad.found)} bad)")
    return SourceRecords(src, pairs, bad.found + bad.dropped)


@dataclass
class Mixture:
    """A drawn mixture: the records in final order and the per-source figures for metrics."""

    records: list[dict[str, str]]
    sources: dict[str, dict[str, Any]]
    bad: list[BadRecord]


def released_draw(read: Sequence[SourceRecords], n: int, seed: int) -> list[dict[str, str]]:
    """The released draw (`evaluation/instruct_dataset.py:56-77`): sources by weight, then a record within each.

    The weights are computed as there (count × factor over the int-truncated total), so the floating
    point cumulative weights, and with them every draw of a given generator state, are the original's.
    """
    counts = {r.source.name: len(r.pairs) for r in read}
    total = int(sum(counts[r.source.name] * r.source.epochs for r in read))  # instruct_dataset.py:56
    weights = [counts[r.source.name] * r.source.epochs / total for r in read]  # :57-60
    rng = random.Random(seed)
    chosen = rng.choices(population=[r.source.name for r in read], weights=weights, k=n)  # :71-75
    by_name = {r.source.name: r.pairs for r in read}
    records = []
    for name in chosen:  # :76-77
        inp, out = rng.choice(by_name[name])
        records.append({"source": name, "input": inp, "output": out})
    return records


def allotted_draw(
    read: Sequence[SourceRecords], n: int, seed: int, allocation: Literal["proportional", "multinomial"]
) -> list[dict[str, str]]:
    """The package's alternatives: per-source counts first, records without needless repeats, one shuffle."""
    rng = np.random.Generator(np.random.PCG64(seed))
    shares = source_shares({r.source.name: len(r.pairs) for r in read}, {r.source.name: r.source.epochs for r in read})
    quota = allocate(n, shares, rng, allocation)
    records: list[dict[str, str]] = []
    for r in read:
        for i in draw_indices(len(r.pairs), quota[r.source.name], rng):
            inp, out = r.pairs[i]
            records.append({"source": r.source.name, "input": inp, "output": out})
    order = rng.permutation(len(records))
    return [records[i] for i in order]


def draw_mixture(read: Sequence[SourceRecords], n: int, seed: int, allocation: Allocation) -> Mixture:
    """Weight the read sources and draw `n` records with `seed` as `allocation` says (module docstring)."""
    records = released_draw(read, n, seed) if allocation == "released" else allotted_draw(read, n, seed, allocation)
    counts = {r.source.name: len(r.pairs) for r in read}
    shares = source_shares(counts, {r.source.name: r.source.epochs for r in read})
    drawn = {r.source.name: 0 for r in read}
    for rec in records:
        drawn[rec["source"]] += 1
    stats = {
        r.source.name: {
            "group": r.source.group or r.source.name,
            "available": counts[r.source.name],
            "epochs": r.source.epochs,
            "weight_percent": round(100.0 * shares[r.source.name], 6),
            "count": drawn[r.source.name],
            "percent": round(100.0 * drawn[r.source.name] / n, 6),
            "bad_records": len(r.bad),
        }
        for r in read
    }
    return Mixture(records, stats, [b for r in read for b in r.bad])


def group_figures(sources: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per seed-table row (`group`): summed weight percent and drawn percent of its sources."""
    out: dict[str, dict[str, float]] = {}
    for s in sources.values():
        g = out.setdefault(s["group"], {"weight_percent": 0.0, "percent": 0.0})
        g["weight_percent"] = round(g["weight_percent"] + s["weight_percent"], 6)
        g["percent"] = round(g["percent"] + s["percent"], 6)
    return out


def build_mixture(cfg: InstructMixConfig, readers: ReadersConfig) -> Mixture:
    """Read every configured source (benchmark files as `readers` says) and draw the mixture (no files written)."""
    read = [read_instruct_source(s, cfg.on_bad_record, readers.medmcqa_cop, readers.duplicates) for s in cfg.sources]
    return draw_mixture(read, cfg.n_records, cfg.seed, cfg.allocation)


def _jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")


def mixture_metrics(cfg: InstructMixConfig, mix: Mixture) -> dict[str, Any]:
    """The `metrics/instruct_mix.json` content: count and percentage per source, bad-record totals."""
    return {
        "n_records": cfg.n_records,
        "seed": cfg.seed,
        "allocation": cfg.allocation,
        "bad_records": len(mix.bad),
        "sources": mix.sources,
        "groups": group_figures(mix.sources),
    }


def run_instruct_mix(cfg: InstructMixConfig, readers: ReadersConfig) -> dict[str, Any]:
    """Stage `instruct-mix`: write `<output>/mixture.jsonl`, `bad_records.jsonl`, manifest and metrics.

    Returns the metrics dict. Bad records are listed (file, position, reason) in
    `bad_records.jsonl` under `skip`, or abort the stage under `abort`.
    """
    mix = build_mixture(cfg, readers)
    inputs = [p for s in cfg.sources for p in s.paths]
    with atomic_dir(cfg.output) as tmp:
        atomic_write_bytes(Path(tmp) / MIXTURE_FILE, _jsonl(mix.records))
        atomic_write_bytes(
            Path(tmp) / BAD_FILE,
            _jsonl([{"path": b.path, "position": b.position, "reason": b.reason} for b in mix.bad]),
        )
        write_manifest(
            tmp,
            stage="instruct-mix",
            inputs=inputs,
            extra={"sources": mix.sources},
            params={"instruct_mix": cfg.section_dict(), "readers": readers.section_dict()},
        )
    metrics = mixture_metrics(cfg, mix)
    write_metrics(cfg.metrics, metrics, HEADLINE)
    return metrics


def load_mixture(folder: str | Path) -> list[dict[str, str]]:
    """Read a verified instruct-mix output folder's records (`source`, `input`, `output`)."""
    require_verified(folder)
    rows = []
    with open(Path(folder) / MIXTURE_FILE, encoding="utf-8") as f:
        for line in f:
            rows.append(json.loads(line))
    return rows
