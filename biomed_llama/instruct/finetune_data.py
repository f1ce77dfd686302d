"""Supervised fine-tuning examples: `{input, output}` text pairs → token ids with masked prompt labels.

Public API (used by `biomed-llama finetune` and the pretrain engine it reuses):

- `build_sft_dataset(finetune, mode, task, tokenizer, readers, on_bad_record) -> SFTDataset`: `mode="instruct"` reads the
  verified instruct-mix output (`finetune.mixture`); `mode="task"` reads `finetune.tasks[task]`
  in its published format and renders it with the fine-tune prompt.
- `SFTDataset`: an indexable sequence; `ds[i]` is `{"input_ids": LongTensor[L], "labels": LongTensor[L]}`.
  Order and resume belong to the engine's sampler; `ds.fingerprint()` identifies the content so a
  resume can refuse a different dataset.
- `ds.sequence(i) -> (input_ids, labels)`: int64 numpy arrays right-padded to `ds.seq_len`
  (= `finetune.max_length`), the `PackedDataset.sequence` interface that
  `biomed_llama.data.loader.DistributedLoader` stacks, so the pretrain loader serves SFT unchanged.
- `SFTCollator(pad_id)`: dynamic padding instead: right-pads a list of examples into `{"input_ids": [B,S], "labels": [B,S]}`,
  padding with `pad_id` and label -100. No attention mask is needed: with right padding and causal
  attention no real token ever attends to a pad, and pads carry no loss.

Example layout (one sequence): `BOS + ids(input + output) + EOS`; labels are -100 on BOS and the
prompt positions and equal the ids on every later position and on EOS, so the loss (the model
shifts labels by one) is on `output + </s>` only, as in the original.

How the pair is tokenized (`finetune.tokenization`, correction 4 of REPRODUCTION.md):
- `joint` (the released code): `input + output` is tokenized as one string, and the first
  `1 + len(ids(input))` positions are masked, whatever tokens the joint string actually has there
  (`evaluation/instruct_dataset.py:85-105`, `evaluation/mcqa_dataset.py:119-139`: `tokenizer([source
  + target, source])`, `labels[:len(tokenize(source))] = IGNORE_INDEX`, both with the tokenizer's
  BOS). With a SentencePiece tokenizer the output keeps the joint string's pieces (`" warfarin"`
  after `### Answer:` is `▁war farin`, not `▁ ▁war farin`); a piece straddling the boundary is
  masked or trained as the original's count falls. The original appended the string `</s>`, which
  its slow tokenizer split off as a special token given as a plain string (`evaluation/main.py:98-103`),
  stripping the whitespace on its left: the joint text is right-stripped before EOS, as there.
- `separate`: input and output tokenized on their own and concatenated, so the mask boundary is
  exact but the output's first piece differs from the released run's (an extra `▁` with
  SentencePiece). Not what the paper's model was trained on.

Truncation to `finetune.max_length`: `right` (default) cuts the sequence's end like the original
(`truncation=True`, right side, at 2048); an example left without any labelled position would
only add a zero-loss row (the original's would have had no target at all) and is dropped
(counted in `ds.n_dropped`). `prompt_left` drops prompt tokens from the left (keeping BOS and the
prompt's end, nearest the answer) so the whole output + EOS survives; only an output longer than
the window is cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from biomed_llama.benchmarks.records import BadRecords
from biomed_llama.data.loader import IGNORE_INDEX
from biomed_llama.errors import UserError
from biomed_llama.instruct.mixture import load_mixture
from biomed_llama.instruct.readers import read_source
from biomed_llama.instruct.templates import render_task

if TYPE_CHECKING:
    from biomed_llama.benchmarks.config import ReadersConfig
    from biomed_llama.train.config import FinetuneConfig

Truncation = Literal["right", "prompt_left"]
Tokenization = Literal["joint", "separate"]


def assemble_body(
    body: Sequence[int], n_prompt: int, bos_id: int, eos_id: int, max_length: int, truncation: Truncation = "right"
) -> tuple[list[int], int] | None:
    """Wrap one example's ids `body` (input then output, no specials) as `BOS + body + EOS` and truncate.

    The first `n_prompt` ids of `body` are the prompt's. Returns `(ids, n_masked)`, where the first
    `n_masked = 1 + n_prompt` positions (BOS + prompt) get label -100, or None when no position
    with a label survives truncation. `n_prompt` may exceed what the joint ids hold when a merge
    swallowed the output (then nothing is left to train and the example is dropped).
    """
    ids = [bos_id, *body, eos_id]
    if truncation == "prompt_left" and len(ids) > max_length and n_prompt > 0:
        cut = min(len(ids) - max_length, n_prompt)  # drop the earliest prompt tokens, keep BOS
        ids = ids[:1] + ids[1 + cut :]
        n_prompt -= cut
    ids = ids[:max_length]  # right truncation, as the original's `truncation=True`
    n_masked = 1 + n_prompt
    return (ids, n_masked) if n_masked < len(ids) else None


def assemble(
    prompt_ids: Sequence[int],
    output_ids: Sequence[int],
    bos_id: int,
    eos_id: int,
    max_length: int,
    truncation: Truncation = "right",
) -> tuple[list[int], int] | None:
    """`assemble_body` for separately tokenized prompt and output ids."""
    return assemble_body([*prompt_ids, *output_ids], len(prompt_ids), bos_id, eos_id, max_length, truncation)


def encode_pairs(
    pairs: Sequence[tuple[str, str]], tokenizer: Any, tokenization: Tokenization = "joint"
) -> list[tuple[list[int], int]]:
    """Token ids (no specials) of each `(input, output)` pair and how many of them are the input's.

    `joint`: ids of `(input + output).rstrip()` and `len(ids(input))` (module docstring);
    `separate`: ids(input) + ids(output) and `len(ids(input))`.
    """
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    if tokenization == "joint":
        bodies = tokenizer([(p + o).rstrip() for p, o in pairs], add_special_tokens=False)["input_ids"]
    elif tokenization == "separate":
        outs = tokenizer([o for _, o in pairs], add_special_tokens=False)["input_ids"]
        bodies = [list(p) + list(o) for p, o in zip(prompts, outs, strict=True)]
    else:
        raise UserError(f"unknown finetune.tokenization {tokenization!r}; use joint or separate")
    return [(list(b), len(p)) for b, p in zip(bodies, prompts, strict=True)]


class SFTDataset:
    """Tokenized SFT examples stored flat (ids, offsets, masked-prefix lengths); `ds[i]` builds tensors."""

    def __init__(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        n_masked: np.ndarray,
        sources: Sequence[str],
        *,
        seq_len: int,
        pad_id: int,
        n_dropped: int = 0,
    ):
        # Internal invariants: `tokenize_pairs` builds all three arrays from one list of examples,
        # each cut to `max_length` by `assemble`; no file or param reaches them otherwise.
        assert offsets.ndim == 1 and len(offsets) == len(n_masked) + 1 == len(sources) + 1
        assert len(n_masked) == 0 or int(np.diff(offsets).max()) <= seq_len
        self.tokens, self.offsets, self.n_masked = tokens, offsets, n_masked
        self.sources = list(sources)
        self.seq_len = seq_len
        """Longest allowed example (`finetune.max_length`); `sequence(i)` pads to it."""
        self.pad_id = pad_id
        """Id written into padded positions (label -100)."""
        self.n_dropped = n_dropped
        """Examples dropped because truncation left them no output token."""

    def __len__(self) -> int:
        return len(self.n_masked)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        ids = torch.from_numpy(self.tokens[self.offsets[i] : self.offsets[i + 1]].astype(np.int64))
        labels = ids.clone()
        labels[: int(self.n_masked[i])] = IGNORE_INDEX
        return {"input_ids": ids, "labels": labels}

    def sequence(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (input_ids, labels) of example i as int64 arrays right-padded to `seq_len`."""
        n = int(self.offsets[i + 1] - self.offsets[i])
        ids = np.full(self.seq_len, self.pad_id, dtype=np.int64)
        ids[:n] = self.tokens[self.offsets[i] : self.offsets[i + 1]]
        labels = np.full(self.seq_len, IGNORE_INDEX, dtype=np.int64)
        labels[int(self.n_masked[i]) : n] = ids[int(self.n_masked[i]) : n]
        return ids, labels

    @property
    def lengths(self) -> np.ndarray:
        """Sequence length of every example (for length-grouped batching or token accounting)."""
        return np.diff(self.offsets)

    def n_label_tokens(self) -> int:
        """Total supervised positions (output + EOS) over the dataset."""
        return int(self.lengths.sum() - self.n_masked.sum())

    def fingerprint(self) -> str:
        """sha256 over ids, offsets and masks: equal iff the examples are identical."""
        h = hashlib.sha256()
        for a in (self.tokens.astype("<i4"), self.offsets.astype("<i8"), self.n_masked.astype("<i8")):
            h.update(a.tobytes())
        return h.hexdigest()

    def stats(self) -> dict[str, Any]:
        """Counts for metrics: examples, dropped, tokens, supervised tokens, longest sequence."""
        lengths = self.lengths
        return {
            "examples": len(self),
            "dropped": self.n_dropped,
            "tokens": int(lengths.sum()),
            "label_tokens": self.n_label_tokens(),
            "max_length": int(lengths.max()) if len(self) else 0,
        }


@dataclass(frozen=True)
class SFTCollator:
    """Right-pad examples into a batch `{"input_ids": LongTensor[B,S], "labels": LongTensor[B,S]}`."""

    pad_id: int
    """Token id written into padded input positions (their labels are -100)."""
    pad_to_multiple_of: int | None = None
    """Round S up to a multiple of this (steadier kernel shapes); None pads to the longest example."""

    def __call__(self, examples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Stack examples, right-padded to the longest (rounded up if asked)."""
        width = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        for row, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[row, :n] = e["input_ids"]
            labels[row, :n] = e["labels"]
        return {"input_ids": ids, "labels": labels}


def special_ids(tokenizer: Any) -> tuple[int, int, int]:
    """Return (bos, eos, pad) ids; pad falls back to EOS (its positions are ignored anyway)."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is None or eos is None:
        raise UserError("the tokenizer has no BOS or EOS token; SFT examples need both")
    pad = tokenizer.pad_token_id
    return bos, eos, eos if pad is None else pad


def tokenize_pairs(
    pairs: Sequence[tuple[str, str]],
    sources: Sequence[str],
    tokenizer: Any,
    max_length: int,
    truncation: Truncation = "right",
    batch_size: int = 1024,
    tokenization: Tokenization = "joint",
) -> SFTDataset:
    """Tokenize `(input, output)` pairs into an SFTDataset (see the module docstring for the layout)."""
    bos, eos, pad = special_ids(tokenizer)
    chunks: list[np.ndarray] = []
    lengths, masked, kept_sources = [], [], []
    dropped = 0
    for start in range(0, len(pairs), batch_size):
        encoded = encode_pairs(pairs[start : start + batch_size], tokenizer, tokenization)
        for k, (body, n_prompt) in enumerate(encoded):
            got = assemble_body(body, n_prompt, bos, eos, max_length, truncation)
            if got is None:
                dropped += 1
                continue
            ids, n_masked = got
            chunks.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
            masked.append(n_masked)
            kept_sources.append(sources[start + k])
    tokens = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int32)
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return SFTDataset(
        tokens,
        offsets,
        np.asarray(masked, dtype=np.int64),
        kept_sources,
        seq_len=max_length,
        pad_id=pad,
        n_dropped=dropped,
    )


def task_pairs(
    ft: FinetuneConfig, task: str, readers: ReadersConfig, on_bad_record: Literal["skip", "abort"]
) -> list[tuple[str, str]]:
    """Read task `task`'s train set (`finetune.tasks`) and render it with the fine-tune prompt.

    Bad records follow `on_bad_record` (`instruct_mix.on_bad_record`), the MedMCQA `cop` convention `readers.medmcqa_cop`.
    """
    tasks = ft.tasks
    if task not in tasks:
        raise UserError(f"unknown fine-tune task {task!r}; finetune.tasks has {sorted(tasks)}")
    spec = tasks[task]
    bad = BadRecords(on_bad_record, duplicates=readers.duplicates)
    items = read_source(spec.format, spec.path, bad, medmcqa_cop=readers.medmcqa_cop)
    if not items:
        raise UserError(f"fine-tune task {task!r}: {spec.path} has no valid records")
    return [render_task(item) for _, item in items]


def instruct_pairs(ft: FinetuneConfig) -> tuple[list[tuple[str, str]], list[str]]:
    """Read the verified instruct-mix output (`finetune.mixture`): `(input, output)` pairs and each record's source."""
    rows = load_mixture(ft.mixture)
    return [(r["input"], r["output"]) for r in rows], [r["source"] for r in rows]


def build_sft_dataset(
    cfg: FinetuneConfig,
    mode: Literal["instruct", "task"],
    task: str | None,
    tokenizer: Any,
    readers: ReadersConfig,
    on_bad_record: Literal["skip", "abort"],
) -> SFTDataset:
    """Build the fine-tuning dataset of `mode` (`task` names a `finetune.tasks` entry in task mode).

    `readers` and `on_bad_record` (`instruct_mix.on_bad_record`) say how task mode reads a published train set.
    """
    if mode == "instruct":
        pairs, sources = instruct_pairs(cfg)
    elif mode == "task":
        if task is None:
            raise UserError("finetune task mode needs a task name (one of finetune.tasks)")
        pairs = task_pairs(cfg, task, readers, on_bad_record)
        sources = [task] * len(pairs)
    else:
        raise UserError(f"unknown finetune mode {mode!r}; use instruct or task")
    ds = tokenize_pairs(pairs, sources, tokenizer, cfg.max_length, cfg.truncation, tokenization=cfg.tokenization)
    if len(ds) == 0:
        raise UserError(f"finetune {mode}: every example was truncated away (finetune.max_length={cfg.max_length})")
    return ds
