"""`biomed-hf-v03`: v0.3's separate context/continuation encoding, scored as a direct forward pass."""

from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance

from biomed_llama.eval.harness import load_lm


def test_v03_backend_encodes_pairs_separately_and_scores_them(eval_root):
    path = str(eval_root / "model")
    args = {"pretrained": path, "dtype": "float32", "device": "cpu", "batch_size": 2, "max_length": 64,
            "add_bos_token": False, "prefix_token_id": 2}
    v03, stock = load_lm(args, "separate"), load_lm(args, "joint")
    tok = v03.tokenizer
    ctx, cont = "The patient received treat", "ment"  # a word split across the pair
    sep = (tok.encode(ctx, add_special_tokens=False), tok.encode(cont, add_special_tokens=False))
    assert v03._encode_pair(ctx, cont) == sep
    joint = stock._encode_pair(ctx, cont)
    whole = tok.encode(ctx + cont, add_special_tokens=False)
    assert joint[1] == whole[len(joint[0]):] and joint[1] != sep[1]  # 0.4 re-splits one encoding

    req = Instance(request_type="loglikelihood", doc={}, arguments=(ctx, cont), idx=0)
    (ll, _greedy), = v03.loglikelihood([req], disable_tqdm=True)
    ids = sep[0] + sep[1]
    with torch.no_grad():
        logits = v03.model(torch.tensor([ids[:-1]])).logits[0]
    lp = torch.log_softmax(logits, -1)[-len(sep[1]):]
    want = float(lp[torch.arange(len(sep[1])), torch.tensor(sep[1])].sum())
    assert ll == pytest.approx(want, rel=1e-6)
