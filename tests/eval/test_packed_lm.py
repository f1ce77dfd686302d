"""Issue 15: the packed backend (each shared context once, token-budgeted batches) gives the stock
`lm_eval --model hf` backend's per-item log-likelihoods, on every request of every seed task.
Issue 23: so it does for GPT-2 (BioMedLM) and GPT-Neo (local-window layers) rows of the paper's table."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import torch
from lm_eval.models.huggingface import HFLM

from biomed_llama.eval import harness, packing
from biomed_llama.eval.harness import scoring_backend
from biomed_llama.eval.packed_lm import PackedHFLM

# Same tolerance as test_fidelity: 1e-5, or about two float32 ulps of larger sums.
ABS_TOL, REL_TOL = 1e-5, 2.5e-7
SEED_RUNS = [("pubmed_a", 0), ("pubmed_c", 0), ("medqa4", 0), ("medqa4", 3), ("medqa5", 0), ("medqa5", 3),
             ("medmcqa", 0), ("medmcqa", 10), ("pubmedqa", 0), ("pubmedqa", 1)]


def instances(cfg, task: str, k: int):
    tm = harness.task_manager(Path(cfg.output) / "tasks")
    name = f"biomed_seed_{task}"
    t = tm.load(name)["tasks"][name]
    t.set_config(key="num_fewshot", value=k)
    t.build_all_requests(rank=0, world_size=1)
    return t.instances


def both(path: str, max_length: int, **packed_kw) -> tuple[HFLM, PackedHFLM]:
    args = {"pretrained": path, "dtype": "float32", "device": "cpu", "batch_size": 4, "max_length": max_length,
            "add_bos_token": False, "prefix_token_id": 2}
    return HFLM(**args), PackedHFLM(**args, **packed_kw)


# GPT-Neo's window (8) is far shorter than the seed contexts, so its local layers cut most of them;
# GPT-2's 40 positions: max_length 40 is no multiple of packing.PAD_MULTIPLE (padding must stop at it).
ARCHS = {"gpt2": {"n_positions": 2048}, "gpt2_40": {"n_positions": 40},
         "gpt_neo": {"max_position_embeddings": 2048, "window_size": 8}}


@pytest.fixture(scope="module")
def arch_models(tmp_path_factory, repo_root) -> dict[str, Path]:
    """Tiny random GPT-2 and GPT-Neo models (float32, the demo tokenizer) in HF folders."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel, GPTNeoConfig, GPTNeoForCausalLM

    tok = AutoTokenizer.from_pretrained(repo_root / "data/sample/tokenizer")
    out = {}
    for name, over in ARCHS.items():
        torch.manual_seed(0)
        if name.startswith("gpt2"):
            model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tok), n_embd=32, n_layer=2, n_head=2, **over))
        else:  # global, local, global, local (GPT-Neo 2.7B alternates them)
            model = GPTNeoForCausalLM(GPTNeoConfig(vocab_size=len(tok), hidden_size=32, num_layers=4, num_heads=2,
                                                   attention_types=[[["global", "local"], 2]], **over))
        out[name] = tmp_path_factory.mktemp(name)
        model.save_pretrained(out[name])
        tok.save_pretrained(out[name])
    return out


def worst_excess(stock: HFLM, packed: PackedHFLM, prepared, runs=SEED_RUNS) -> float:
    """Over every request of `runs`: the largest |packed - stock| beyond the tolerance (<= 0: all agree);
    greedy flags must be equal."""
    worst = float("-inf")
    for task, k in runs:
        reqs = instances(prepared, task, k)
        if reqs[0].request_type == "loglikelihood":
            want, got = stock.loglikelihood(reqs, disable_tqdm=True), packed.loglikelihood(reqs, disable_tqdm=True)
            assert [g for _, g in got] == [g for _, g in want], (task, k)
            pairs = [(a, b) for (a, _), (b, _) in zip(got, want)]
        else:
            pairs = list(zip(packed.loglikelihood_rolling(reqs, disable_tqdm=True),
                             stock.loglikelihood_rolling(reqs, disable_tqdm=True)))
        worst = max(worst, *(abs(a - b) - max(ABS_TOL, REL_TOL * abs(b)) for a, b in pairs))
    return worst


@pytest.mark.parametrize("max_length", [48, 2048])  # 48: contexts truncated from the left, windows roll
def test_packed_equals_stock_on_every_seed_request(prepared, eval_root, max_length):
    stock, packed = both(str(eval_root / "model"), max_length, token_budget=2048)
    assert packed.packable and scoring_backend(packed) == "packed" and scoring_backend(stock) == "stock"
    assert worst_excess(stock, packed, prepared) <= 0


@pytest.mark.parametrize(("arch", "max_length"), [("gpt2", 48), ("gpt2", 2048), ("gpt2_40", 40),
                                                  ("gpt_neo", 48), ("gpt_neo", 2048)])
def test_gpt2_and_gpt_neo_pack_exactly(prepared, arch_models, arch, max_length):
    stock, packed = both(str(arch_models[arch]), max_length, token_budget=2048)
    assert packed.packable
    assert worst_excess(stock, packed, prepared) <= 0


def test_gpt_neo_packed_rows_need_the_window_in_positions(prepared, arch_models, monkeypatch):
    """Left to its own column-indexed window, GPT-Neo's local layers hide context tokens from a packed
    row's later segments (and windows of other documents): the per-request results then differ."""
    stock, packed = both(str(arch_models["gpt_neo"]), 2048, token_budget=2048)
    assert packed.packable
    runs = [("medqa4", 3), ("pubmed_a", 0)]
    assert worst_excess(stock, packed, prepared, runs) <= 0
    monkeypatch.setattr(packing, "position_windows", lambda *args: contextlib.nullcontext())
    assert packed.packable
    assert worst_excess(stock, packed, prepared, runs) > 0
    # Where its local layers' window mask cannot be found, a GPT-Neo is scored by the stock code.
    monkeypatch.setattr(packing, "local_attention_layers", lambda model: [])
    assert not packed.packable


def test_gpt2_packed_rows_need_positions_restarted(prepared, arch_models, monkeypatch):
    """Learned positions: numbering a packed row's columns 0..T-1 instead of restarting each segment
    after the prefix gives other log-likelihoods than lm-eval's."""
    stock, packed = both(str(arch_models["gpt2"]), 2048, token_budget=2048)
    build = packing.build_batch

    def by_column(rows, pad_id, max_length=None):
        batch = build(rows, pad_id, max_length)
        batch.position_ids = torch.arange(batch.input_ids.shape[1]).expand_as(batch.input_ids).clone()
        return batch

    monkeypatch.setattr(packing, "build_batch", by_column)
    assert worst_excess(stock, packed, prepared, [("medqa4", 3), ("pubmed_a", 0)]) > 0


def test_padding_stops_at_max_length():
    """A learned position table has max_length entries: a 40-token row is not padded to 48."""
    rows = packing.plan_rows([([1] * 30, [2] * 11), ([3] * 5, [4])], max_length=40)
    b = packing.build_batch(rows, pad_id=0, max_length=40)
    assert b.input_ids.shape[1] == 40 and int(b.position_ids.max()) == 39
    assert packing.build_batch(rows, pad_id=0).input_ids.shape[1] == 48


def test_rows_share_contexts_dedupe_and_truncate_like_lm_eval():
    pairs = [([1, 2, 3], [4, 5]), ([1, 2, 3], [6]), ([9], [4]), ([1, 2, 3], [4, 5]), ([7] * 6, [8, 8])]
    rows = packing.plan_rows(pairs, max_length=6)
    by_prefix = {r.prefix: r.segments for r in rows}
    assert by_prefix[(1, 2, 3)] == {(4, 5): [0, 3], (6,): [1]}
    assert by_prefix[(9,)] == {(4,): [2]}
    # 6 + 2 > 6 + 1: lm-eval's input is (ctx + cont)[-7:][:-1]; the scored tail is cont, the rest the prefix.
    assert by_prefix[(7,) * 5] == {(8, 8): [4]}
    # A row never grows past max_length: the same context then opens a second row.
    long = packing.plan_rows([([1], [2] * 5), ([1], [3] * 5)], max_length=6)
    assert [r.segments for r in long] == [{(2,) * 5: [0]}, {(3,) * 5: [1]}]


def test_batch_layout_and_mask():
    rows = packing.plan_rows([([5, 6], [7, 8, 9]), ([5, 6], [10, 11])], max_length=64)
    b = packing.build_batch(rows, pad_id=0)
    n = 2 + 2 + 1  # prefix, cont1[:-1], cont2[:-1]
    assert b.input_ids[0, :n].tolist() == [5, 6, 7, 8, 10]
    assert b.position_ids[0, :n].tolist() == [0, 1, 2, 3, 2]  # each continuation restarts after the prefix
    assert b.input_ids.shape[1] % packing.PAD_MULTIPLE == 0
    # Targets: the last prefix token predicts both first tokens; each segment's own tokens the rest.
    assert list(zip(b.cols.tolist(), b.targets.tolist(), b.owner.tolist())) == \
        [(1, 7, 0), (2, 8, 0), (3, 9, 0), (1, 10, 1), (4, 11, 1)]
    allowed = packing.attention_bias(b.segment_ids, torch.float32)[0, 0, :n, :n] == 0
    want = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 0], [1, 1, 0, 0, 1]],
                        dtype=torch.bool)
    assert torch.equal(allowed, want)


def test_batches_stay_within_the_token_budget():
    rows = packing.plan_rows([([i] * (3 + i % 40), [1, 2]) for i in range(200)], max_length=128)
    groups = packing.batches(rows, token_budget=256)
    assert sum(len(g) for g in groups) == len(rows)
    for g in groups:
        width = -(-max(len(r) for r in g) // packing.PAD_MULTIPLE) * packing.PAD_MULTIPLE
        assert len(g) == 1 or len(g) * width <= 256
        assert [len(r) for r in g] == sorted((len(r) for r in g), reverse=True)


def test_models_that_cannot_pack_use_the_stock_scoring(prepared, eval_root, tmp_path, repo_root):
    from transformers import AutoTokenizer, GPTNeoXConfig, GPTNeoXForCausalLM

    tok = AutoTokenizer.from_pretrained(repo_root / "data/sample/tokenizer")
    torch.manual_seed(0)
    GPTNeoXForCausalLM(GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=64)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    stock, packed = both(str(tmp_path), 64)
    assert not packed.packable
    # what results.json and evaluate's progress line then name: the stock code, for both backends
    assert scoring_backend(packed) == scoring_backend(stock) == "stock"
    reqs = instances(prepared, "pubmedqa", 0)[:12]
    assert packed.loglikelihood(reqs, disable_tqdm=True) == stock.loglikelihood(reqs, disable_tqdm=True)


def test_kept_encodings_are_the_stock_ids_and_skip_repeated_contexts(prepared, sp_model):
    """`PackedHFLM.tok_encode` keeps recent encodings: every pair encodes as HFLM's does, under either BOS setting
    (`harness.set_suite` switches it between suites, so it is part of the key), and an item's context, asked for
    once per answer choice, reaches the tokenizer once."""
    # loaded as `evaluate` loads a model (`harness.hf_model_args` without a suite): BOS left to `set_suite`
    args = {"pretrained": str(sp_model), "dtype": "float32", "device": "cpu", "batch_size": 4, "max_length": 2048,
            "prefix_token_id": 2}
    stock, packed = HFLM(**args), PackedHFLM(**args)
    pairs = [r.args for r in instances(prepared, "medqa4", 3)[:40]]  # 10 items x 4 choices, in item order
    assert len({c for c, _ in pairs}) == 10
    calls = []
    encode = packed.tokenizer.encode
    packed.tokenizer.encode = lambda *a, **k: calls.append(a[0]) or encode(*a, **k)
    got = {}
    for suite in ("seed", "modern"):  # no BOS, then the tokenizer's default (a BOS for this LLaMA)
        harness.set_suite(stock, suite)
        harness.set_suite(packed, suite)
        bos = packed.add_bos_token
        got[bos] = [packed._encode_pair(c, x) for c, x in pairs]
        assert got[bos] == [stock._encode_pair(c, x) for c, x in pairs]
    assert got[False] != got[None]  # the setting changes the ids: a cache blind to it would have answered wrongly
    assert len(calls) == 2 * (40 + 10)  # per setting: each context + continuation, and each item's context once
    ids = packed.tok_encode(pairs[0][0])
    ids.append(-1)  # a caller's change does not reach the kept encoding
    assert packed.tok_encode(pairs[0][0]) == stock.tok_encode(pairs[0][0])
