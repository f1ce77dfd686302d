"""prepare-eval: benchmark files (published formats) → task JSON-lines + rendered lm-eval task folders.

The benchmark files are parsed by the shared readers (`biomed_llama.benchmarks`, as the
`readers` params say), the same that instruct-mix and task fine-tuning use; a bad record aborts
(`read_docs` says why). Output folder (default `data/eval/`):
- `<task>.test.jsonl` (and `<task>.train.jsonl`, the few-shot pool, where a train file is given)
  for medqa4, medqa5, medmcqa, pubmedqa; `pubmed_a.test.jsonl`, `pubmed_c.test.jsonl` when a
  model's suites ask for perplexity (only then is `pile_extracted` read and verified);
  `medmcqa.unlabeled_test.jsonl` when an instruct / finetune MedMCQA run asks for the test split;
- `tasks/<suite>/<task>.yaml`: the package's task templates of the prepared tasks with the data paths filled in, and
  a generated `tasks/<suite>/utils.py` binding each task's few-shot sampler to its pool file, so
  `lm_eval --include_path <out>/tasks` and our runner load the very same tasks;
- `manifest.json` (hashes, inputs, params, environment).
Paths written into the YAMLs are `output` as configured: relative outputs mean "run from the
repository root", which is where DVC runs stages.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from biomed_llama.benchmarks.config import ReadersConfig
from biomed_llama.benchmarks.jsonio import require_file
from biomed_llama.benchmarks.readers import read_medmcqa_unlabeled
from biomed_llama.benchmarks.records import BadRecords
from biomed_llama.errors import ConfigError
from biomed_llama.eval.config import GEN_SUITES, MC_TASKS, PPL_TASKS, EvalConfig

# read_docs and MC_FILES live in formats.py so the contamination stage reads the items without prepare-eval's code
from biomed_llama.eval.formats import MC_FILES, mc_docs, read_docs, read_pile_test  # noqa: F401  (re-exported)
from biomed_llama.eval.plan import plan_runs, task_name
from biomed_llama.fsutil import atomic_dir
from biomed_llama.provenance import require_verified, write_manifest

TEMPLATES = "tasks"
# The eval params prepare-eval depends on (the dvc.yaml stage lists the same keys, and `readers`):
# models, shots and fewshot decide which pools and perplexity sets are needed, the MedMCQA split of
# the generation suites whether the MedMCQA test file is.
PREPARE_PARAMS: dict[str, bool | set[str]] = {
    "benchmarks": True,
    "output": True,
    "ppl_max_docs": True,
    "fewshot_seed": True,
    "models": True,
    "shots": True,
    "fewshot": True,
    "generation": {"medmcqa_split"},
}
# The split name (file `medmcqa.<split>.jsonl`) of the MedMCQA test set read with the released code's targets.
UNLABELED_SPLIT = "unlabeled_test"
TaskData = dict[str, dict[str, list[dict[str, Any]]]]


def requested(cfg: EvalConfig) -> tuple[set[str], dict[str, int]]:
    """What `eval.models` × suites × shots ask for: the tasks run, and the seed suite's few-shot counts per task."""
    runs = plan_runs(cfg)
    return {r.task for r in runs}, {r.task: r.shots for r in runs if r.suite == "seed" and r.shots}


def unlabeled_medmcqa(cfg: EvalConfig) -> list[dict[str, Any]] | None:
    """The MedMCQA test set with the released code's targets, when a generation run asks for it (else None)."""
    if cfg.generation.medmcqa_split != "test" or not any(
        r.suite in GEN_SUITES and r.task == "medmcqa" for r in plan_runs(cfg)
    ):
        return None
    if not cfg.benchmarks.medmcqa_test:
        raise ConfigError(
            "eval.benchmarks.medmcqa_test: not set, but eval.generation.medmcqa_split is test "
            "and an instruct / finetune MedMCQA run is asked for"
        )
    bad = BadRecords("abort", advice="an evaluation set keeps every item: fix or replace the file")
    return mc_docs(read_medmcqa_unlabeled(require_file(cfg.benchmarks.medmcqa_test, "benchmark file"), bad))


def check_pools(cfg: EvalConfig, fewshot: dict[str, int]) -> None:
    """A pool that a seed-suite few-shot run needs (`fewshot`: task → shots) but that is unset is a ConfigError."""
    for task, shots in fewshot.items():
        key, path = cfg.benchmarks.pool(task)
        if key and not path:
            raise ConfigError(
                f"{key}: not set, but the seed suite's {shots}-shot {task} run draws its "
                "examples from it (the task's train file)"
            )


def read_benchmarks(
    cfg: EvalConfig, readers: ReadersConfig | None = None, dropped: list[str] | None = None
) -> TaskData:
    """Read what the config asks for into {task: {"test": docs, ["train": docs]}}.

    The four MC test sets always; the few-shot pools that are set (a needed one must be); the
    Pile test split (`pile_extracted`, verified) only when a perplexity task is asked for. Exact
    duplicates dropped (`readers.duplicates: drop`) are appended to `dropped`.
    """
    readers = readers or ReadersConfig()
    b = cfg.benchmarks
    wanted, fewshot = requested(cfg)
    check_pools(cfg, fewshot)
    out: TaskData = {
        task: {"test": read_docs(task, getattr(b, MC_FILES[task][0]), readers, dropped)} for task in MC_TASKS
    }
    for task in MC_TASKS:
        pool = b.pool(task)[1]
        if pool:
            out[task]["train"] = read_docs(task, pool, readers, dropped)
    ppl = [task for task in PPL_TASKS if task in wanted]
    if ppl:
        require_verified(b.pile_extracted)
    for task in ppl:
        out[task] = {"test": read_pile_test(b.pile_extracted, task, cfg.ppl_max_docs)}
    unlabeled = unlabeled_medmcqa(cfg)
    if unlabeled is not None:
        out["medmcqa"][UNLABELED_SPLIT] = unlabeled
    return out


def benchmark_inputs(cfg: EvalConfig, data: TaskData) -> list[str]:
    """The input files/folders prepare-eval read (for the manifest)."""
    b = cfg.benchmarks
    files = []
    for task in MC_TASKS:
        files.append(getattr(b, MC_FILES[task][0]))
        if "train" in data[task]:
            files.append(b.pool(task)[1])
    if UNLABELED_SPLIT in data["medmcqa"]:
        files.append(b.medmcqa_test)
    if any(task in data for task in PPL_TASKS):
        files.append(b.pile_extracted)
    return files


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    """Write records as JSON lines (sorted keys, so reruns are byte-identical)."""
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n")


def data_file(out: Path, task: str, split: str) -> str:
    """The path of a prepared file as written into the task YAMLs (under the final output name)."""
    return (out / f"{task}.{split}.jsonl").as_posix()


def render_utils(final: Path, suite_tasks: list[str], cfg: EvalConfig, pools: dict[str, bool]) -> str:
    """The generated `utils.py` of one suite folder: the package helpers plus one bound sampler per task.

    A task with a pool key but no prepared pool gets a sampler that refuses few-shot requests
    (naming the key), so the stock CLI cannot silently draw its examples from elsewhere.
    """
    lines = [
        '"""Generated by `biomed-llama prepare-eval`: the package\'s task helpers, and each task\'s',
        'few-shot sampler (the fork\'s draws) bound to its pool (a train file, or None: the test set)."""',
        "from biomed_llama.eval.task_utils import *  # noqa: F401,F403",
        "from biomed_llama.eval.task_utils import v03_sampler",
        "",
    ]
    for task in suite_tasks:
        key = cfg.benchmarks.pool(task)[0]
        pool = repr(data_file(final, task, "train")) if pools.get(task) else "None"
        missing = f", missing={key!r}" if key and not pools.get(task) else ""
        lines.append(f"sampler_{task} = v03_sampler({pool}, {cfg.fewshot_seed}{missing})")
    return "\n".join(lines) + "\n"


def render_tasks(tmp: Path, final: Path, cfg: EvalConfig, data: TaskData) -> list[str]:
    """Fill the package's task templates of the prepared tasks into `tmp/tasks/<suite>/`; return the task names."""
    names = []
    pools = {task: "train" in splits for task, splits in data.items()}
    root = resources.files("biomed_llama.eval") / TEMPLATES
    for suite_dir in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name):
        dest = tmp / "tasks" / suite_dir.name
        dest.mkdir(parents=True)
        tasks = sorted(
            p.name[: -len(".yaml")]
            for p in suite_dir.iterdir()
            if p.name.endswith(".yaml") and p.name[: -len(".yaml")] in data
        )
        for task in tasks:
            files = {"test": data_file(final, task, "test")}
            text = (suite_dir / f"{task}.yaml").read_text(encoding="utf-8")
            text = text.replace("@DATA_FILES@", json.dumps(files))
            (dest / f"{task}.yaml").write_text(text, encoding="utf-8")
            names.append(task_name(suite_dir.name, task))
        (dest / "utils.py").write_text(
            render_utils(final, [t for t in tasks if t in MC_TASKS], cfg, pools), encoding="utf-8"
        )
    return names


def prepare_eval(cfg: EvalConfig, readers: ReadersConfig | None = None) -> dict[str, Any]:
    """Run prepare-eval: read (`readers`: how; default auto), convert, render and write `cfg.output`
    atomically; return counts per file."""
    readers = readers or ReadersConfig()
    dropped: list[str] = []
    data = read_benchmarks(cfg, readers, dropped)
    final = Path(cfg.output)
    counts: dict[str, int] = {}
    with atomic_dir(final) as tmp:
        for task, splits in data.items():
            for split, records in splits.items():
                write_jsonl(tmp / f"{task}.{split}.jsonl", records)
                counts[f"{task}.{split}"] = len(records)
        names = render_tasks(tmp, final, cfg, data)
        params = {
            "eval": cfg.model_dump(mode="json", include=PREPARE_PARAMS),
            "readers": readers.model_dump(mode="json"),
        }
        write_manifest(
            tmp,
            stage="prepare-eval",
            params=params,
            inputs=benchmark_inputs(cfg, data),
            extra={"counts": counts, "tasks": names, "dropped_duplicates": dropped},
        )
    return counts
