"""The committed demo sample: it is what `scripts/make_sample.py` makes, and its tokenizer round-trips it."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import zstandard

from tests.helpers import load_script


@pytest.fixture(scope="module")
def make_sample():
    """The script as a module (it is a script, not part of the package)."""
    return load_script("make_sample")


def _lines(path: Path) -> list[str]:
    with open(path, "rb") as f:
        return list(io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8"))


def test_committed_sample_is_what_the_script_makes(repo_root: Path):
    out = subprocess.run([sys.executable, str(repo_root / "scripts" / "make_sample.py"), "--check"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "up to date" in out.stdout


def test_check_detects_changed_missing_and_extra_files(repo_root: Path, make_sample, tmp_path: Path):
    # The comparison behind --check, on a copy of the committed sample with one byte flipped,
    # one file removed and one added.
    import shutil

    for d in (make_sample.PILE_DIR, make_sample.TOKENIZER_DIR):
        shutil.copytree(repo_root / d, tmp_path / d)
    victim = tmp_path / make_sample.PILE_DIR / "val.jsonl.zst"
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    (tmp_path / make_sample.TOKENIZER_DIR / "tokenizer_config.json").unlink()
    (tmp_path / make_sample.PILE_DIR / "stray.jsonl.zst").write_bytes(b"")
    tok, pile = make_sample.TOKENIZER_DIR, make_sample.PILE_DIR
    assert make_sample.compare(repo_root, tmp_path) == [
        f"missing: {tok / 'tokenizer_config.json'}", f"unexpected: {pile / 'stray.jsonl.zst'}",
        f"differs: {pile / 'val.jsonl.zst'}"]
    assert make_sample.compare(repo_root, repo_root) == []


def test_layout_subsets_and_malformed_lines(repo_root: Path, make_sample):
    for name, counts in make_sample.LAYOUT.items():
        subsets: Counter[str] = Counter()
        bad = 0
        for line in _lines(repo_root / make_sample.PILE_DIR / name):
            try:
                rec = json.loads(line)
            except ValueError:
                bad += 1
                continue
            if not rec.get("text") or "meta" not in rec:
                bad += 1
                continue
            subsets[rec["meta"]["pile_set_name"]] += 1
        assert dict(subsets) == counts, name
        assert bad == (len(make_sample.MALFORMED) if name == "train/01.jsonl.zst" else 0), name
    # Both PubMed subsets and at least two subsets that extraction drops.
    all_subsets = set().union(*make_sample.LAYOUT.values())
    assert {"PubMed Abstracts", "PubMed Central"} <= all_subsets and len(all_subsets) >= 4


def test_tokenizer_special_ids_no_auto_bos_eos_and_roundtrip(repo_root: Path, make_sample):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(repo_root / make_sample.TOKENIZER_DIR))
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (0, 1, 2, 3)
    assert len(tok) == make_sample.VOCAB_SIZE
    assert tok("BACKGROUND: x")["input_ids"][0] != tok.bos_token_id
    texts = make_sample.all_texts(repo_root)
    assert len(texts) > 500
    lengths = []
    for t in texts + ["unseen ☃ text — with 日本語, tabs\tand\r\nCRLF  double  spaces "]:
        ids = tok(t)["input_ids"]
        assert tok.eos_token_id not in ids and tok.bos_token_id not in ids
        assert tok.decode(ids) == t
        lengths.append(len(ids))
    assert max(lengths) > 300  # some documents are longer than a short demo context
