"""Score many (context, continuation) token pairs in few forward passes: each context once for all of its continuations.

lm-eval's HF backend (and the original's fork, `lm_eval/base.py:271-405`) runs one sequence per
pair, `(context + continuation)[-(max_length + 1):][:-1]`, and sums the log-probabilities of the
continuation's tokens. A 4-option question with a 10-shot context costs four copies of that
context. Here the pairs that share a context become one *row*:

    context | cont_1[:-1] | cont_2[:-1] | ...        (segment 0 | segment 1 | segment 2 | ...)

Segment j attends to the context and, causally, to itself, never to another segment; its
position ids restart at len(context). So each continuation token sees exactly the tokens, at the
positions, it sees in lm-eval's own input, and the logit of the last context token predicts the
first token of every continuation. A pair whose context + continuation exceed max_length + 1
tokens is left-truncated as lm-eval (and the fork) truncate it and gets a row of its own. Rows
are also capped at max_length tokens (a new row repeats the context), which keeps the
attention mask small; for the rolling-perplexity windows, whose contexts are one token, that cap
packs several short documents into one row, each attending only to itself.

Only the positions that predict a continuation token go through the output head, in float32
log-softmax: no `[batch, seq, vocab]` tensor is ever built.

Learned absolute positions (GPT-2, GPT-Neo) take the same position ids as rotary ones: each token
gets the index it has in lm-eval's right-padded input, and padding never reaches max_length. GPT-Neo's
local layers see only the previous `window_size` tokens, which its attention cuts by *column*
(`GPTNeoSelfAttention.bias`, transformers 5.24 models/gpt_neo/modeling_gpt_neo.py:58-70,114-124), not by
position id; a later segment sits further right than its positions say, so the model's own window
would hide context tokens lm-eval's input shows. `position_windows` gives those layers the window in
position ids for the packed batch instead (`local_attention_layers`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch

from biomed_llama.errors import UserError

# Rows are padded to a multiple of this (SDPA's memory-efficient kernel wants aligned mask strides).
PAD_MULTIPLE = 16
# Target positions sent through the output head at once (bounds the float32 logits: N × vocab).
HEAD_CHUNK = 4096


@dataclass
class Row:
    """One packed sequence: a prefix every segment sees, and its continuations (tokens → request indices)."""

    prefix: tuple[int, ...]
    segments: dict[tuple[int, ...], list[int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.prefix) + sum(len(c) - 1 for c in self.segments)


def plan_rows(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], max_length: int) -> list[Row]:
    """Group `(context_ids, continuation_ids)` pairs into rows (request index = position in `pairs`).

    Identical pairs share one segment. A pair longer than max_length + 1 is truncated from the
    left (fork `base.py:339-341`) into a row of its own; otherwise rows grow up to max_length tokens.
    """
    open_rows: dict[tuple[int, ...], Row] = {}
    rows: list[Row] = []
    for i, (ctx, cont) in enumerate(pairs):
        assert ctx and cont and len(cont) <= max_length, "lm-eval's invariants (fork base.py:327-329)"
        cont = tuple(cont)
        if len(ctx) + len(cont) > max_length + 1:
            full = (tuple(ctx) + cont)[-(max_length + 1) :]
            rows.append(Row(full[: len(full) - len(cont)], {cont: [i]}))
            continue
        key = tuple(ctx)
        row = open_rows.get(key)
        if row is not None and cont in row.segments:
            row.segments[cont].append(i)
            continue
        if row is None or (len(row) + len(cont) - 1 > max_length and row.segments):
            row = open_rows[key] = Row(key)
            rows.append(row)
        row.segments[cont] = [i]
    return rows


def batches(rows: list[Row], token_budget: int) -> list[list[Row]]:
    """Rows longest first, cut into batches whose padded size (rows × longest) stays within the budget."""
    out: list[list[Row]] = []
    for row in sorted(rows, key=len, reverse=True):
        if out and (len(out[-1]) + 1) * _padded(len(out[-1][0])) <= token_budget:
            out[-1].append(row)
        else:
            out.append([row])
    return out


def _padded(n: int) -> int:
    return -(-n // PAD_MULTIPLE) * PAD_MULTIPLE


@dataclass
class Batch:
    """Tensors of one forward pass and where its targets are.

    Shapes: `input_ids`, `position_ids`, `segment_ids` [B, T]; `rows`, `cols`, `targets`, `owner`
    [N] (N target tokens: batch row, the position whose logit predicts it, the token, its segment);
    `requests[s]` = the request indices segment s answers.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segment_ids: torch.Tensor | None
    rows: torch.Tensor
    cols: torch.Tensor
    targets: torch.Tensor
    owner: torch.Tensor
    requests: list[list[int]]


def build_batch(rows: list[Row], pad_id: int, max_length: int | None = None) -> Batch:
    """Lay the rows out (right-padded) with their positions, segment ids and target coordinates.

    Padding is never wider than max_length (no row is longer): its position ids run on from the row's
    last one, and a learned position table (BioMedLM: 1,024) has no entry past max_length - 1."""
    longest = max(len(r) for r in rows)
    width = min(_padded(longest), max_length) if max_length else _padded(longest)  # longest <= max_length
    ids, pos, seg = [], [], []
    coords: list[tuple[int, int, int, int]] = []  # (row, col, token, segment)
    requests: list[list[int]] = []
    for b, row in enumerate(rows):
        n = len(row.prefix)
        r_ids, r_pos, r_seg = list(row.prefix), list(range(n)), [0] * n
        for j, (cont, reqs) in enumerate(row.segments.items(), 1):
            start = len(r_ids)
            r_ids += cont[:-1]
            r_pos += range(n, n + len(cont) - 1)
            r_seg += [j] * (len(cont) - 1)
            cols = [n - 1] + list(range(start, start + len(cont) - 1))
            coords += [(b, c, t, len(requests)) for c, t in zip(cols, cont, strict=True)]
            requests.append(reqs)
        pad = width - len(r_ids)
        ids.append(r_ids + [pad_id] * pad)
        pos.append(r_pos + list(range(r_pos[-1] + 1, r_pos[-1] + 1 + pad)))
        seg.append(r_seg + [-1] * pad)
    packed = any(len(r.segments) > 1 for r in rows)
    rr, cc, tt, oo = (torch.tensor(x) for x in zip(*coords, strict=True))
    return Batch(torch.tensor(ids), torch.tensor(pos), torch.tensor(seg) if packed else None, rr, cc, tt, oo, requests)


def allowed_pairs(segment_ids: torch.Tensor) -> torch.Tensor:
    """Boolean [B, 1, T, T] (query, key): causal, and a segment sees only the prefix (0) and itself.

    Padding (-1) sees the prefix and other padding, so no query row is fully masked."""
    t = segment_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=segment_ids.device).tril()
    q, k = segment_ids[:, :, None], segment_ids[:, None, :]
    return (causal & ((k == 0) | (k == q)))[:, None]


def attention_bias(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask [B, 1, T, T] of `allowed_pairs`: 0 where allowed, the dtype's minimum elsewhere."""
    allowed = allowed_pairs(segment_ids)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=segment_ids.device)
    return bias.masked_fill_(~allowed, torch.finfo(dtype).min)


def local_attention_layers(model) -> list[torch.nn.Module]:
    """GPT-Neo's local-attention modules: `attention_type == "local"` and a boolean `bias` buffer, the
    column-indexed window mask its eager attention applies before the attention mask (5.24's modeling_gpt_neo.py:
    58-70,114-124; the same in 5.17). Empty for any other model."""
    return [
        m
        for m in model.modules()
        if getattr(m, "attention_type", None) == "local"
        and isinstance(getattr(m, "bias", None), torch.Tensor)
        and m.bias.dtype == torch.bool
    ]


@contextmanager
def position_windows(
    layers: Sequence[torch.nn.Module], segment_ids: torch.Tensor, position_ids: torch.Tensor, window: int
) -> Iterator[None]:
    """For one packed batch, make each local layer's window count position ids instead of columns.

    Its `bias` becomes `allowed_pairs` and `0 <= pos_q - pos_k < window` ([B, 1, T, T], which its
    `bias[:, :, k - q : k, :k]` slice and `torch.where` broadcast over heads); restored afterwards.
    Within a segment and its prefix the position ids are those of lm-eval's input, so each query sees
    exactly the keys it sees there."""
    near = (position_ids[:, :, None] - position_ids[:, None, :]) < window
    mask = allowed_pairs(segment_ids) & near[:, None]
    saved = [m.bias for m in layers]
    try:
        for m in layers:
            m.bias = mask
        yield
    finally:
        for m, b in zip(layers, saved, strict=True):
            m.bias = b


def _target_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(target) and argmax == target for each selected hidden state ([N, H] → [N], [N])."""
    lps, eqs = [], []
    for s in range(0, hidden.shape[0], HEAD_CHUNK):
        logits = head(hidden[s : s + HEAD_CHUNK]).float()
        tgt = targets[s : s + HEAD_CHUNK, None]
        lps.append(torch.log_softmax(logits, dim=-1).gather(-1, tgt)[:, 0])
        eqs.append(logits.argmax(-1) == tgt[:, 0])
    return torch.cat(lps), torch.cat(eqs)


@torch.inference_mode()
def score_batch(
    model, batch: Batch, device: torch.device, local: Sequence[torch.nn.Module] = ()
) -> list[tuple[float, bool]]:
    """One forward pass; per segment: (sum of continuation log-probs, every token greedy). `local`: the
    model's `local_attention_layers` (found once per `score_rows`, not per batch).

    Each segment's float32 log-probs are summed on their own, as lm-eval sums one pair's
    (`float(logits.sum())`), so float32 results agree with it to the last bits of the hidden states."""
    dtype = next(model.parameters()).dtype
    seg = batch.segment_ids.to(device) if batch.segment_ids is not None else None
    pos = batch.position_ids.to(device)
    windows: AbstractContextManager[None] = nullcontext()
    # An unpacked batch's columns are its positions (0..n-1 per row): the model's own window is exact.
    if seg is not None and local:
        windows = position_windows(local, seg, pos, model.config.window_size)
    with windows:
        out = model.get_decoder()(
            input_ids=batch.input_ids.to(device),
            position_ids=pos,
            attention_mask=attention_bias(seg, dtype) if seg is not None else None,
            use_cache=False,
        )
    hidden = out.last_hidden_state[batch.rows.to(device), batch.cols.to(device)]
    lp, eq = _target_logprobs(model.get_output_embeddings(), hidden, batch.targets.to(device))
    counts = torch.bincount(batch.owner, minlength=len(batch.requests)).tolist()
    lps, eqs = torch.split(lp.cpu(), counts), torch.split(eq.cpu(), counts)
    return [(float(p.clone().sum()), bool(e.all())) for p, e in zip(lps, eqs, strict=True)]


def score_rows(
    model,
    rows: list[Row],
    n_requests: int,
    *,
    pad_id: int,
    token_budget: int,
    device: torch.device,
    max_length: int | None = None,
) -> list[tuple[float, bool]]:
    """(log-likelihood, is-greedy) of every request the rows cover, in request order."""
    out: list[tuple[float, bool] | None] = [None] * n_requests
    local = local_attention_layers(model)
    for group in batches(rows, token_budget):
        batch = build_batch(group, pad_id, max_length)
        try:
            scored = score_batch(model, batch, device, local)
        except torch.OutOfMemoryError as e:
            raise UserError(
                f"out of accelerator memory on a {tuple(batch.input_ids.shape)} batch: "
                f"lower eval.token_budget (now {token_budget})"
            ) from e
        for reqs, answer in zip(batch.requests, scored, strict=True):
            for i in reqs:
                out[i] = answer
    assert all(a is not None for a in out), "every request belongs to one segment"
    return out  # type: ignore[return-value]
