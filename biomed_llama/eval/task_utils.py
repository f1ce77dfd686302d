"""The Python side of the lm-eval task YAMLs: prompts, choices, the fork's few-shot example sampler.

The rendered task folders (`data/eval/tasks/<suite>/utils.py`, written by prepare-eval) re-export
this module, so `!function utils.<name>` in the YAMLs resolves here, for our runner and for the
stock `lm_eval` CLI alike. Records are the shape `formats.py` makes:
`{"idx", "n_docs", "id", "context", "question", "options", "label"}`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from lm_eval.api.samplers import ContextSampler

from biomed_llama.benchmarks.records import LETTERS, MCItem, YesNoItem
from biomed_llama.errors import IntegrityError
from biomed_llama.instruct.templates import mc_prompt, pubmedqa_prompt, render_task


def _item(doc: dict[str, Any]) -> MCItem | YesNoItem:
    """The instruct package's item for a record, so eval prompts are the training templates, verbatim."""
    if doc["context"]:
        return YesNoItem(
            question=doc["question"], contexts=(doc["context"],), answer=doc["options"][doc["label"]].lower()
        )
    return MCItem(question=doc["question"], options=tuple(doc["options"]), answer=LETTERS[doc["label"]])


# ---- seed suite: the original's prompts (Question/Answer, Abstract/Question/Answer) ----


def seed_text(doc: dict[str, Any]) -> str:
    """The original prompt: `Question: {q}\\nAnswer:`, with `Abstract: {contexts}\\n` first for PubMedQA."""
    head = f"Abstract: {doc['context']}\n" if doc["context"] else ""
    return f"{head}Question: {doc['question']}\nAnswer:"


def option_choices(doc: dict[str, Any]) -> list[str]:
    """The full option texts (seed suite: each is scored as a continuation)."""
    return list(doc["options"])


def pubmedqa_fewshot_target(doc: dict[str, Any]) -> str:
    """A PubMedQA few-shot example's answer: the lower-case decision (fork `tasks/pubmedqa.py:85-86`,
    `" {}".format(doc["final_decision"])`; the delimiter supplies the space), while the scored choices
    are `Yes` / `No` / `Maybe` (pubmedqa.py:97-99)."""
    return doc["options"][doc["label"]].lower()


# ---- instruct prompts (`instruct` generation suite and `instruct_letters`): `### Question:` … `### Answer:(` ----


def instruct_text(doc: dict[str, Any]) -> str:
    """The instruction-tuned prompt (`instruct.templates`); MC ends in `### Answer:(`, PubMedQA in `### Answer:`."""
    item = _item(doc)
    return pubmedqa_prompt(item) if isinstance(item, YesNoItem) else mc_prompt(item)


def letter_choices(doc: dict[str, Any]) -> list[str]:
    """Option letters `A`, `B`, … (instruct_letters and modern suites score letters)."""
    return list(LETTERS[: len(doc["options"])])


# ---- modern suite: lm-eval's built-in medqa_4options / medmcqa / pubmedqa prompt styles ----


def modern_medqa_text(doc: dict[str, Any]) -> str:
    """lm-eval `medqa_4options` style: question, `A. …` lines, `Answer:`; letters scored."""
    opts = "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(doc["options"]))
    return f"Question: {doc['question']}\n{opts}Answer:"


def modern_medmcqa_text(doc: dict[str, Any]) -> str:
    """lm-eval `medmcqa` style: question, `Choices:`, `A. …` lines, `Answer:`; letters scored."""
    opts = "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(doc["options"]))
    return f"Question: {doc['question']}\nChoices:\n{opts}Answer:"


def modern_pubmedqa_choices(doc: dict[str, Any]) -> list[str]:
    """lm-eval `pubmedqa` style choices: lower-case `yes`, `no`, `maybe`."""
    return [o.lower() for o in doc["options"]]


# ---- finetune prompt (scored by eval/generate.py) ----


def finetune_text(doc: dict[str, Any]) -> str:
    """The task fine-tune prompt (`instruct.templates.render_task`), ending in `### Answer:`."""
    return render_task(_item(doc))[0]


# ---- the fork's few-shot example selection (lm-eval v0.3's: fork evaluator.py:229-255, base.py:598-602,710-735) ----


def v03_fewshot_picks(n_eval: int, pool_size: int, k: int, from_eval_set: bool, seed: int = 42) -> list[list[int]]:
    """Replay the fork's (lm-eval v0.3's) example draws: which pool indices each eval item (by file position) got.

    The fork made ONE `random.Random(seed)` per task, shuffled the eval documents with it, then, in
    that shuffled order, drew `rnd.sample(train_docs, k)` per document; a task without a train
    set drew `rnd.sample(eval_docs, k + 1)`, dropped the current item and kept the first k.
    `shuffle` and `sample` consume the generator by length only, so index lists replay it exactly.
    """
    rnd = random.Random(seed)
    order = list(range(n_eval))
    rnd.shuffle(order)
    picks: list[list[int]] = [[] for _ in range(n_eval)]
    for i in order:
        if from_eval_set:
            picks[i] = [j for j in rnd.sample(range(pool_size), k + 1) if j != i][:k]
        else:
            picks[i] = rnd.sample(range(pool_size), k)
    return picks


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Read a prepared JSON-lines file."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class V03Sampler(ContextSampler):
    """A ContextSampler that gives each eval document the examples the fork (lm-eval v0.3) gave it.

    The task sets `fewshot_split` to its test split so lm-eval passes `eval_doc`; the pool is
    the task's train file (`POOL`) when it has one, else the eval documents themselves.
    lm-eval's own `fewshot_random_seed` does not apply: the selection is the original's.
    """

    POOL: str | None = None
    SEED: int = 42
    MISSING: str | None = None
    """The param naming a pool that was not prepared: few-shot requests are refused, naming it."""

    def __init__(self, df=None, **kwargs) -> None:
        super().__init__(df, **kwargs)
        self._picks: dict[int, list[list[int]]] = {}
        self._pool: list[dict[str, Any]] | None = None

    def _pool_docs(self) -> list[dict[str, Any]]:
        if self._pool is None:
            pool = read_jsonl(self.POOL) if self.POOL else sorted(self.df, key=lambda d: d["idx"])
            # The v0.3 picks are indices into the pool as prepare-eval wrote it: `idx` 0, 1, … in order.
            if [d.get("idx") for d in pool] != list(range(len(pool))):
                where = self.POOL or "the task's test file"
                raise IntegrityError(
                    f"{where}: the few-shot pool's `idx` fields are not 0..{len(pool) - 1} in "
                    f"order (edited after prepare-eval?); rerun prepare-eval"
                )
            self._pool = pool
        return self._pool

    def sample(self, n: int, eval_doc: dict[str, Any] | None = None, df=None, **kwargs) -> list[dict[str, Any]]:
        """Return the `n` examples the fork drew for `eval_doc` (by its `idx` among `n_docs`)."""
        if n == 0:
            return []
        if eval_doc is None:
            raise ValueError("V03Sampler needs fewshot_split == test_split so lm-eval passes eval_doc")
        if self.MISSING:
            raise ValueError(f"no few-shot pool was prepared for this task: set {self.MISSING} and rerun prepare-eval")
        pool = self._pool_docs()
        if n not in self._picks:
            self._picks[n] = v03_fewshot_picks(eval_doc["n_docs"], len(pool), n, self.POOL is None, self.SEED)
        return [pool[j] for j in self._picks[n][eval_doc["idx"]]]


def v03_sampler(pool: str | None, seed: int = 42, missing: str | None = None) -> type[V03Sampler]:
    """A V03Sampler subclass bound to one task's pool file (None: the eval set) and seed.

    `missing` names the unset pool param of a task that needs one: such a sampler refuses few-shot.
    """
    return type("V03Sampler_bound", (V03Sampler,), {"POOL": pool, "SEED": seed, "MISSING": missing})
