"""The v0.3 few-shot example selection, against a literal replay of the v0.3 harness's loop."""

from __future__ import annotations

import json
import random

import pytest

from biomed_llama.errors import IntegrityError

from biomed_llama.eval.task_utils import V03Sampler, v03_fewshot_picks, v03_sampler


def v03_loop(eval_docs, train_docs, k, seed=42):
    """lm-eval v0.3.0 `evaluate` + `Task.fewshot_context`, on document objects (not indices)."""
    rnd = random.Random()
    rnd.seed(seed)
    docs = list(eval_docs)
    rnd.shuffle(docs)
    chosen = {}
    for doc in docs:
        if train_docs is not None:
            ex = rnd.sample(train_docs, k)
        else:
            ex = rnd.sample(list(eval_docs), k + 1)
            ex = [x for x in ex if x != doc][:k]
        chosen[doc["idx"]] = [x["idx"] for x in ex]
    return chosen


def _docs(n):
    return [{"idx": i, "n_docs": n, "q": f"question {i}"} for i in range(n)]


def test_picks_match_v03_with_a_train_pool():
    eval_docs, train = _docs(37), _docs(23)
    want = v03_loop(eval_docs, train, 3)
    got = v03_fewshot_picks(37, 23, 3, from_eval_set=False)
    assert [want[i] for i in range(37)] == got


def test_picks_match_v03_from_the_eval_set_excluding_the_item():
    eval_docs = _docs(30)
    want = v03_loop(eval_docs, None, 1)
    got = v03_fewshot_picks(30, 30, 1, from_eval_set=True)
    assert [want[i] for i in range(30)] == got
    assert all(i not in p and len(p) == 1 for i, p in enumerate(got))


def test_sampler_returns_the_docs_for_each_eval_doc(tmp_path):
    eval_docs = _docs(12)
    cls = v03_sampler(None, 42)
    assert issubclass(cls, V03Sampler)
    s = cls(list(reversed(eval_docs)))  # pool order comes from idx, not from the given order
    picks = v03_fewshot_picks(12, 12, 2, from_eval_set=True)
    for d in eval_docs:
        assert [x["idx"] for x in s.sample(2, eval_doc=d)] == picks[d["idx"]]
    assert s.sample(0, eval_doc=eval_docs[0]) == []


def test_a_sampler_without_its_pool_refuses_few_shot_naming_the_key():
    eval_docs = _docs(5)
    s = v03_sampler(None, 42, missing="eval.benchmarks.medqa4_train")(eval_docs)
    assert s.sample(0, eval_doc=eval_docs[0]) == []  # zero-shot still works
    with pytest.raises(ValueError, match="set eval.benchmarks.medqa4_train and rerun prepare-eval"):
        s.sample(3, eval_doc=eval_docs[0])


@pytest.mark.parametrize("idx", [[0, 2, 1], [0, 2], [1, 2, 3]])
def test_an_edited_pool_file_is_one_integrity_error(tmp_path, idx):
    # A prepared pool whose lines were reordered or removed by hand (the stock lm_eval CLI reads
    # data/eval directly, without verifying its manifest) would silently shift every pick.
    pool = tmp_path / "medqa4.train.jsonl"
    pool.write_text("".join(json.dumps({"idx": i, "question": f"q{i}"}) + "\n" for i in idx))
    s = v03_sampler(str(pool), 42)([])
    with pytest.raises(IntegrityError, match=f"^{pool}: the few-shot pool's `idx` fields are not 0..{len(idx) - 1}"):
        s.sample(1, eval_doc={"idx": 0, "n_docs": 3})
