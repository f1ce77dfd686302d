"""lm-eval's decontamination n-grams, reused (not rewritten): its `Janitor` normalisation and `word_ngrams`.

lm-eval 0.4 (`lm_eval/decontamination/decontaminate.py`, `get_train_overlap`) builds each task's lookup as
`word_ngrams(janitor.normalize_string(document), n)` over `task.doc_to_decontamination_query(doc)` and calls
a test document contaminated when ANY of its n-grams occurs in the training set. `Janitor.normalize_string`
lower-cases ASCII letters and deletes `string.punctuation` (janitor.py: `translation_table`); `word_ngrams`
splits on whitespace and joins each window of n words with one space, so text that differs only in case,
punctuation or whitespace gives the same n-grams, and a text of fewer than n words gives none.
Nothing here reads or writes lm-eval's pickled caches (`Janitor.save/load_contamination_ngrams`).

The decontamination text of each task is the original fork's `doc_to_decontamination_query`:
- PubMedQA: `doc["question"] + " " + "\\n".join(doc["context"]["contexts"])`
  (Coldog2333/BioMed-LLaMA github/lm-evaluation-harness/lm_eval/tasks/pubmedqa.py:82-83);
- MedMCQA: `doc["query"]`, the question (tasks/medmcqa.py:45-51, 105-106);
- MedQA-USMLE (4 and 5 options): `doc["query"]`, the question (tasks/usmleqa.py:48-74, 105-106).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _lm_eval() -> tuple[Callable[[str], str], Callable[[str, int], Iterable[str]]]:
    """(Janitor().normalize_string, word_ngrams) of the installed lm-eval.

    Importing `lm_eval.decontamination.janitor` prints a warning and a traceback when its optional C++
    helper is absent (janitor.py:11-18); only the pure-Python functions are used, so that noise is swallowed.
    """
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from lm_eval.decontamination.janitor import Janitor, word_ngrams
    return Janitor().normalize_string, word_ngrams


def normalize(text: str) -> str:
    """lm-eval's `Janitor.normalize_string`: ASCII letters lower-cased, ASCII punctuation deleted."""
    return _lm_eval()[0](text)


def ngrams(text: str, n: int) -> Iterable[str]:
    """The word n-grams of `text` after normalisation, as lm-eval forms them (a generator; may repeat)."""
    norm, word_ngrams = _lm_eval()
    return word_ngrams(norm(text), n)


def decontamination_query(task: str, doc: dict[str, Any]) -> str:
    """The text of a prepared test document (eval/formats.py) that is matched against the corpus (the fork's
    `doc_to_decontamination_query`): PubMedQA its question, a space and its context (the contexts joined by
    newlines: `YesNoItem.context`); the multiple-choice tasks their question alone."""
    if task == "pubmedqa":
        return doc["question"] + " " + doc["context"]
    return doc["question"]


def item_ngrams(text: str, n: int) -> list[str]:
    """The distinct n-grams of one item, in order of first occurrence (an item's overlap is over these)."""
    return list(dict.fromkeys(ngrams(text, n)))
