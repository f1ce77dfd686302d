"""Independent checks of the harness numbers: perplexity and multiple choice recomputed here with
plain forward passes of the same model, compared with what `evaluate` stored."""

from __future__ import annotations

import json
import math
import random
import re

import pytest
import torch

from biomed_llama.eval.formats import read_pile_test
from biomed_llama.eval.task_utils import read_jsonl


@pytest.fixture(scope="module")
def model_and_tok(pipeline):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, _ = pipeline
    path = cfg.models["tiny"].path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


@torch.no_grad()
def logprobs(model, inp: list[int], targets: list[int]) -> float:
    """Sum of log p(targets) where the last len(targets) positions of `inp` predict them."""
    logits = model(torch.tensor([inp])).logits[0].float()
    lp = torch.log_softmax(logits, -1)[-len(targets):]
    return float(lp[torch.arange(len(targets)), torch.tensor(targets)].sum())


def rolling_loglik(model, ids: list[int], prefix: int, max_len: int) -> float:
    """Log-likelihood of every token of `ids`, predicted in chunks of max_len tokens; each chunk's
    forward pass sees the max_len tokens before its last target (EOS prefix at the start)."""
    seq = [prefix] + ids
    total = 0.0
    for start in range(0, len(ids), max_len):
        end = min(start + max_len, len(ids))
        inp = seq[max(0, end - max_len):end]
        total += logprobs(model, inp, seq[start + 1:end + 1])
    return total


@pytest.mark.parametrize("task", ["pubmed_a", "pubmed_c"])
def test_perplexity_equals_direct_computation(pipeline, model_and_tok, task):
    cfg, metrics = pipeline
    model, tok = model_and_tok
    docs = read_pile_test(cfg.benchmarks.pile_extracted, task)[: cfg.limit]
    ll = words = nbytes = 0
    rolled = False
    for d in docs:
        ids = tok.encode(d["text"], add_special_tokens=False)
        rolled |= len(ids) > cfg.max_length
        ll += rolling_loglik(model, ids, tok.eos_token_id, cfg.max_length)
        words += len(re.split(r"\s+", d["text"]))
        nbytes += len(d["text"].encode("utf-8"))
    assert rolled, "fixture texts must be longer than max_length so windows roll"
    m = metrics["tiny"]
    want = {"word_perplexity": math.exp(-ll / words), "byte_perplexity": math.exp(-ll / nbytes),
            "bits_per_byte": -ll / nbytes / math.log(2)}
    for name, value in want.items():
        assert m[f"seed.{task}.0shot.{name}"] == pytest.approx(value, rel=1e-6), name


def v03_examples(test, train, k, seed=42):
    """Literal draw of the fork (lm-eval v0.3): shuffle eval docs, then rnd.sample(train, k) per doc in that order."""
    rnd = random.Random(seed)
    order = list(test)
    rnd.shuffle(order)
    return {d["idx"]: rnd.sample(train, k) for d in order}


@pytest.mark.parametrize("shots", [0, 3])
def test_medqa4_acc_equals_direct_scoring(pipeline, model_and_tok, shots):
    cfg, metrics = pipeline
    model, tok = model_and_tok
    test = read_jsonl(f"{cfg.output}/medqa4.test.jsonl")
    train = read_jsonl(f"{cfg.output}/medqa4.train.jsonl")
    examples = v03_examples(test, train, shots)
    acc = acc_norm = 0
    docs = test[: cfg.limit]
    for d in docs:
        shot_text = "".join(f"Question: {e['question']}\nAnswer: {e['options'][e['label']]}\n\n"
                            for e in examples[d["idx"]])
        ctx = shot_text + f"Question: {d['question']}\nAnswer:"
        ctx_ids = tok.encode(ctx, add_special_tokens=False)
        scores = []
        for opt in d["options"]:
            whole = tok.encode(ctx + " " + opt, add_special_tokens=False)
            cont = whole[len(ctx_ids):]
            window = whole[-(cfg.max_length + 1):][:-1]  # left-truncated to max_length, last token predicted
            scores.append(logprobs(model, window, cont))
        acc += int(max(range(len(scores)), key=lambda i: (scores[i], -i)) == d["label"])
        normed = [s / len(o) for s, o in zip(scores, d["options"])]
        acc_norm += int(max(range(len(normed)), key=lambda i: (normed[i], -i)) == d["label"])
    m = metrics["tiny"]
    assert m[f"seed.medqa4.{shots}shot.acc"] == pytest.approx(acc / len(docs), abs=1e-12)
    assert m[f"seed.medqa4.{shots}shot.acc_norm"] == pytest.approx(acc_norm / len(docs), abs=1e-12)


def test_logged_prompts_are_the_original_format(pipeline):
    cfg, _ = pipeline
    samples = [json.loads(line) for line in
               open(f"{cfg.results_dir}/tiny/seed.pubmedqa.1shot.samples.jsonl", encoding="utf-8")]
    ctx, cont = samples[0]["arguments"][0]
    assert cont == "Yes"  # no leading space, as the original scored it
    shot, _, current = ctx.partition("\n\n")
    # The fork's doc_to_target (tasks/pubmedqa.py:85-86): the lower-case decision after a space.
    assert shot.startswith("Abstract: ") and re.search(r"\nAnswer: (yes|no|maybe)$", shot)
    assert current.startswith("Abstract: ") and current.endswith("\nAnswer:")
