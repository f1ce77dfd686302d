"""`PackedHFLM`: lm-eval's stock HF backend, scoring log-likelihoods through `packing` (each context once).

Everything up to the token ids is HFLM's own: `tok_encode` (its recent results kept, as an item's context
repeats once per answer choice), and TemplateLM's pair encoding, which
is the fork's rule line for line (context and continuation tokenized together and split at the
context's length, trailing context spaces moved onto the continuation: fork `lm_eval/base.py:201-210`;
an empty context becomes the prefix token). Only the forward passes differ: the pairs that share a
context are packed into one row (`packing`), and the rolling-perplexity windows of all documents
are scored together in length-sorted batches under a token budget, instead of one padded batch of
`batch_size` sequences at a time. Per-request results equal the stock `lm_eval --model hf` path
(float32: to rounding; tests/eval/test_packed_lm.py).

Packing needs position ids and a 4D attention mask to reach the attention kernels unchanged, which
LLaMA and GPT-2 do under SDPA or eager attention (transformers' `create_causal_mask` returns a 4D mask
as it is: masking_utils.py `_preprocess_mask_arguments`), and GPT-Neo under eager attention, its only
one besides FlashAttention, with its local layers' window moved onto position ids
(`packing.position_windows`). Any other model (or attention implementation) is scored by HFLM's own
code, unchanged.
"""

from __future__ import annotations

from collections import OrderedDict

from lm_eval import utils as lm_utils
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from biomed_llama.eval import packing
from biomed_llama.eval.config import PACKABLE_MODEL_TYPES

PACKABLE_ATTENTION = ("sdpa", "eager")
# Encodings `tok_encode` keeps (least recently used out): an item's context is asked for once per answer choice, in a
# row (TemplateLM._encode_pair), so a few suffice; 64 also spans the requests of an item whose choices are split up.
ENCODINGS_KEPT = 64


class PackedHFLM(HFLM):
    """HFLM with context-sharing, token-budgeted log-likelihood scoring."""

    def __init__(self, *args, token_budget: int = 32768, **kwargs) -> None:
        self._encoded: OrderedDict[tuple, list[int]] = OrderedDict()  # before HFLM's init, which may encode
        super().__init__(*args, **kwargs)
        self.token_budget = token_budget

    @property
    def packable(self) -> bool:
        """Whether this model's forward takes packed rows (else HFLM's stock scoring is used).

        A GPT-Neo also needs every local layer's window mask where `packing.local_attention_layers` finds
        it: were transformers to keep it elsewhere, packed rows would see past the window, so stock it is."""
        cfg = self.model.config
        n_local = list(getattr(cfg, "attention_layers", [])).count("local")
        if cfg.model_type == "gpt_neo" and len(packing.local_attention_layers(self.model)) != n_local:
            return False
        return (
            self.backend == "causal"
            and cfg.model_type in PACKABLE_MODEL_TYPES
            and getattr(cfg, "_attn_implementation", "sdpa") in PACKABLE_ATTENTION
        )

    def tok_encode(
        self, string: str, add_special_tokens: bool | None = None, left_truncate_len: int | None = None, **kwargs
    ) -> list[int]:
        """HFLM's `tok_encode`, the same ids, with the last `ENCODINGS_KEPT` results kept.

        TemplateLM's pair encoding encodes `context + continuation` and then `context` alone for every answer
        choice: a 4-choice item's context is encoded 4 times, 3 of its 8 encodings repeat. lm-eval tokenizes a
        run's requests on one CPU core before any forward, so on a GPU that time is the card's idle time: 39% of
        a seed suite's MedQA/MedMCQA/PubMedQA runs with a tiny model (21.4 s of 55.2 s under cProfile, 2-core CPU,
        first 1,000 items of each; 14.6 s with the kept encodings). Keyed by everything that decides the ids: the
        string, the two arguments and `add_bos_token` (`harness.set_suite` switches it between suites)."""
        if kwargs:  # arguments this cache does not key on: HFLM's own path
            return super().tok_encode(string, add_special_tokens, left_truncate_len, **kwargs)
        key = (string, add_special_tokens, left_truncate_len, getattr(self, "add_bos_token", None))
        ids = self._encoded.get(key)
        if ids is None:
            ids = super().tok_encode(string, add_special_tokens, left_truncate_len)
            self._encoded[key] = ids
            if len(self._encoded) > ENCODINGS_KEPT:
                self._encoded.popitem(last=False)
        else:
            self._encoded.move_to_end(key)
        return list(ids)  # a copy: a caller's change never reaches the kept one

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else self.eot_token_id

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        """(log-likelihood, is-greedy) per `(key, context_ids, continuation_ids)`, in request order."""
        if not self.packable:
            return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
        rows = packing.plan_rows([(ctx, cont) for _, ctx, cont in requests], self.max_length)
        answers = packing.score_rows(
            self.model,
            rows,
            len(requests),
            pad_id=self._pad_id(),
            token_budget=self.token_budget,
            device=self.device,
            max_length=self.max_length,
        )
        for (key, _, _), answer in zip(requests, answers, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Rolling log-likelihood per document: HFLM's windows (EOS-prefixed, max_length), all documents at once."""
        if not self.packable:
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm)
        windows, owners = [], []
        for i, req in enumerate(requests):
            (string,) = req.args
            for ctx, cont in map(
                lm_utils.make_disjoint_window,
                lm_utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                ),
            ):
                windows.append((None, ctx, cont))
                owners.append(i)
        scored = self._loglikelihood_tokens(windows)
        totals = [0.0] * len(requests)
        for i, (ll, _greedy) in zip(owners, scored, strict=True):
            totals[i] += ll  # window order per document, as HFLM sums them
        for req, total in zip(requests, totals, strict=True):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals
