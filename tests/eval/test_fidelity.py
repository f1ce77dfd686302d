"""Issue 14, items 1 and 2: the seed suite computes what the authors' lm-eval fork computed.

Everything the fork did is re-implemented here from its files (github/lm-evaluation-harness/
lm_eval/base.py, evaluator.py, tasks/usmleqa.py, medmcqa.py, pubmedqa.py), independently of the
package: prompts and few-shot contexts, the (context, continuation) token pairs (joint encoding
split at the context's length), and each item's log-likelihood from plain forward passes. The
package's numbers come from its own path (rendered lm-eval tasks, `PackedHFLM`, `evaluate`).
Checked on the demo's byte-level BPE tokenizer and on a LLaMA-style SentencePiece tokenizer
trained in the fixtures, where the `▁` of a fresh encode changes which tokens are scored.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import yaml

from biomed_llama.eval import harness
from biomed_llama.eval.config import EvalConfig, EvalModel
from biomed_llama.eval.run import evaluate
from biomed_llama.eval.task_utils import read_jsonl

MC = ("medqa4", "medqa5", "medmcqa", "pubmedqa")
# Per-item agreement: 1e-5 absolute; beyond |ll| = 40, about two float32 ulps of the value (a sum of
# float32 log-probs near -100 has an ulp of 7.6e-6; the stock path moves by 4e-6 between batch sizes).
ABS_TOL, REL_TOL = 1e-5, 2.5e-7


def close(a: float, b: float) -> bool:
    return abs(a - b) <= max(ABS_TOL, REL_TOL * abs(b))


# ---- the fork, re-implemented ----

def fork_encode_pair(tok, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """base.py:201-223 with `hf-causal-experimental`'s tok_encode (`encode(s, add_special_tokens=False)`,
    models/huggingface.py:373-385,437-439; evaluation.sh:5-6 names that model)."""
    enc = lambda s: tok.encode(s, add_special_tokens=False)  # noqa: E731
    if context == "":
        return [tok.eos_token_id], enc(continuation)
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces > 0:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole, ctx = enc(context + continuation), enc(context)
    return ctx, whole[len(ctx):]


def fork_text(doc) -> str:
    """usmleqa.py:80-81, medmcqa.py:57-58; pubmedqa.py:53-57 (contexts joined by newlines)."""
    if doc["context"]:
        return f"Abstract: {doc['context']}\nQuestion: {doc['question']}\nAnswer:"
    return f"Question: {doc['question']}\nAnswer:"


def fork_target(doc) -> str:
    """MultipleChoiceTask.doc_to_target (base.py:744-745); PubMedQA's `" {final_decision}"` (pubmedqa.py:85-86)."""
    answer = doc["options"][doc["label"]]
    return " " + (answer.lower() if doc["context"] else answer)


def fork_choices(doc) -> list[str]:
    """base.py:747-752 (`" {choice}"`); PubMedQA: `Yes`, `No`, `Maybe` (pubmedqa.py:97-99)."""
    return ["Yes", "No", "Maybe"] if doc["context"] else [" " + o for o in doc["options"]]


def fork_contexts(test: list[dict], pool: list[dict] | None, k: int) -> dict[int, str]:
    """evaluator.py:229-255 + base.py:710-740: one Random(42) shuffles the docs, then draws each doc's examples."""
    rnd = random.Random()
    rnd.seed(42)
    docs = list(test)
    rnd.shuffle(docs)
    out = {}
    for doc in docs:
        if k == 0:
            shots = ""
        else:
            ex = rnd.sample(pool, k) if pool is not None else [x for x in rnd.sample(test, k + 1) if x != doc][:k]
            shots = "\n\n".join(fork_text(e) + fork_target(e) for e in ex) + "\n\n"
        out[doc["idx"]] = shots + fork_text(doc)
    return out


def fork_pairs(cfg: EvalConfig, task: str, k: int) -> list[tuple[str, str]]:
    """Every (context, continuation) the fork sent for a task at k shots, documents in file order."""
    test = read_jsonl(Path(cfg.output) / f"{task}.test.jsonl")
    pool_file = Path(cfg.output) / f"{task}.train.jsonl"
    ctxs = fork_contexts(test, read_jsonl(pool_file) if pool_file.exists() else None, k)
    return [(ctxs[d["idx"]], c) for d in test for c in fork_choices(d)]


@torch.no_grad()
def fork_loglikelihood(model, ctx_ids: list[int], cont_ids: list[int], max_length: int) -> float:
    """base.py:339-397 for one pair: left-truncated input, log-softmax, sum over the continuation."""
    inp = (ctx_ids + cont_ids)[-(max_length + 1):][:-1]
    logits = model(torch.tensor([inp]), logits_to_keep=len(cont_ids)).logits[0]  # the last len(cont) positions
    lp = torch.log_softmax(logits.float(), -1)
    return float(lp[torch.arange(len(cont_ids)), torch.tensor(cont_ids)].sum())


# ---- the package's side ----

def package_instances(cfg: EvalConfig, task: str, k: int):
    """The lm-eval Instances the package's rendered seed task builds (documents in file order)."""
    tm = harness.task_manager(Path(cfg.output) / "tasks")
    name = f"biomed_seed_{task}"
    t = tm.load(name)["tasks"][name]
    t.set_config(key="num_fewshot", value=k)
    t.build_all_requests(rank=0, world_size=1)
    return sorted(t.instances, key=lambda i: (i.doc_id, i.idx))


def scored_pairs(lm, instances) -> list[tuple[list[int], list[int]]]:
    """The (context ids, continuation ids) the backend scores for `instances` (its encoding step, as `evaluate` runs it)."""
    seen = []
    lm._loglikelihood_tokens = lambda reqs, **kw: seen.extend((c, x) for _, c, x in reqs) or [(0.0, True)] * len(reqs)
    lm.loglikelihood(instances, disable_tqdm=True)
    del lm._loglikelihood_tokens
    return seen


@pytest.fixture(scope="module")
def seed_lm(any_model, prepared):
    lm = harness.load_lm(harness.hf_model_args(prepared.model_copy(update={"device": "cpu"}), str(any_model)))
    harness.set_suite(lm, "seed")
    return lm


@pytest.mark.parametrize("task", MC)
def test_contexts_and_token_pairs_are_the_forks(prepared, seed_lm, task):
    """Items 1 + 2: each request's strings and scored token ids equal the fork's, zero- and few-shot."""
    tok = seed_lm.tokenizer
    for k in (0, prepared.fewshot[task]):
        instances = package_instances(prepared, task, k)
        want = fork_pairs(prepared, task, k)
        assert [tuple(i.args) for i in instances] == want
        assert scored_pairs(seed_lm, instances) == [fork_encode_pair(tok, c, x) for c, x in want]


def test_sentencepiece_pieces_are_scored_as_the_fork_scored_them(prepared, sp_model):
    """The `▁` effects of correction 1 on the LLaMA-style tokenizer, and correction 2's lower-case example."""
    lm = harness.load_lm(harness.hf_model_args(prepared.model_copy(update={"device": "cpu"}), str(sp_model)))
    harness.set_suite(lm, "seed")
    tok = lm.tokenizer
    pieces = tok.convert_ids_to_tokens
    mc = package_instances(prepared, "medqa4", 0)
    (ctx, cont), = scored_pairs(lm, mc[:1])
    assert pieces(cont)[0].startswith("▁") and pieces(cont)[0] != "▁"  # ' Aspirin' → ▁Asp…, not ▁ ▁Asp…
    assert pieces(tok.encode(mc[0].args[1], add_special_tokens=False))[0] == "▁"  # what a separate encode gives
    assert ctx[0] != tok.bos_token_id  # the fork ran without BOS
    yn = package_instances(prepared, "pubmedqa", 1)
    (ctx, cont), = scored_pairs(lm, yn[:1])
    assert "".join(pieces(cont)) == "Yes"  # glued to "Answer:", not ▁Yes
    shot = yn[0].args[0].split("\n\n")[0]
    decision = shot.rsplit("\nAnswer: ", 1)[1]
    assert decision in ("yes", "no", "maybe") and "▁" + decision in pieces(ctx)


@pytest.fixture(scope="module")
def paper_run(prepared, eval_root, repo_root):
    """`evaluate` over the full seed suite with the paper profile's eval settings (CPU, float32, tiny demo model)."""
    paper = yaml.safe_load((repo_root / "configs/paper.yaml").read_text())["eval"]
    kept = {k: paper[k] for k in ("backend", "token_budget", "max_length", "fewshot", "fewshot_seed", "shots", "limit")}
    root = eval_root / "paper"
    cfg = prepared.model_copy(update={**kept, "models": {"tiny": EvalModel(
        path=str(eval_root / "model"), paper_row="BioMed-LLaMA-7B", suites=["seed"])},
        "metrics_dir": str(root / "metrics"), "table_metrics": str(root / "table.json"), "results_dir": str(root / "reports"), "table": str(root / "table.md")})
    evaluate(cfg, "demo")
    return cfg


def test_paper_profile_seed_items_equal_the_forks_loglikelihoods(paper_run):
    """Acceptance: every item of every seed run under the paper profile's eval settings, recomputed as the fork did."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = paper_run
    assert cfg.backend == "packed" and cfg.max_length == 2048 and cfg.limit is None
    path = cfg.models["tiny"].path
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(path)
    n = 0
    for run in harness.plan_runs(cfg):
        for s in map(json.loads, (Path(cfg.results_dir) / "tiny" / f"{run.key}.samples.jsonl").open()):
            for args, resp in zip(s["arguments"], s["resps"]):
                if run.task in MC:  # resp: [[ll, is_greedy]]
                    got, want = resp[0][0], fork_loglikelihood(model, *fork_encode_pair(tok, *args), cfg.max_length)
                else:  # resp: [ll]
                    got, want = resp[0], fork_rolling(model, tok, args[0], cfg.max_length)
                assert close(got, want), (run.key, s["doc_id"], got, want)
                n += 1
    docs = {t: read_jsonl(Path(cfg.output) / f"{t}.test.jsonl") for t in ("pubmed_a", "pubmed_c") + MC}
    assert n == sum(2 * len(d["options"]) for t in MC for d in docs[t]) + len(docs["pubmed_a"]) + len(docs["pubmed_c"])


@torch.no_grad()
def fork_rolling(model, tok, text: str, max_length: int) -> float:
    """base.py:227-269 with utils.get_rolling_token_windows: EOS prefix, disjoint windows of max_length."""
    ids = tok.encode(text, add_special_tokens=False)
    seq, total = [tok.eos_token_id] + ids, 0.0
    for start in range(0, len(ids), max_length):
        end = min(start + max_length, len(ids))
        total += fork_loglikelihood(model, seq[max(0, end - max_length):start + 1], seq[start + 1:end + 1], max_length)
    return total


def test_paper_profile_metrics_follow_from_the_items(paper_run):
    """The stored acc of each MC run is the argmax accuracy of its logged items (nothing else moves the cell)."""
    cfg = paper_run
    metrics = json.loads((Path(cfg.metrics_dir) / "tiny.json").read_text())
    for run in harness.plan_runs(cfg):
        if run.task not in MC:
            continue
        samples = [json.loads(line) for line in (Path(cfg.results_dir) / "tiny" / f"{run.key}.samples.jsonl").open()]
        hits = [max(range(len(s["resps"])), key=lambda i: (s["resps"][i][0][0], -i)) == s["target"] for s in samples]
        assert metrics[f"{run.key}.acc"] == pytest.approx(sum(hits) / len(hits), abs=1e-12)
        assert math.isfinite(metrics[f"{run.key}.acc_norm"])
