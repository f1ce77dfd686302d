"""Faults injected into the data stages: kill -9, a full or read-only disk, text that is not UTF-8.

Each case checks the one error line, the exit code, that nothing is half-written and that a rerun
recovers. The disk cases run on a small tmpfs when this process may mount one (root), and the
same outcome is also checked with an injected ENOSPC / EACCES everywhere.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from biomed_llama.config import Params
from biomed_llama.data.config import TokenizeConfig
from biomed_llama.data.tokenize import run_tokenize
from biomed_llama.errors import BadRecordError, OutputError
from biomed_llama.provenance import verify, write_manifest
from tests.helpers import REPO
from tests.helpers import procs as P
from biomed_llama.testing import write_extracted
from tests.helpers.disk import remount, tmpfs

TOKENIZER = REPO / "data" / "sample" / "tokenizer"
WORDS = "the of patients cell protein expression tumor mice receptor kinase increased significantly".split()


def _docs(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(20, 120)))) + "." for _ in range(n)]


def _params(tmp: Path, out: Path, workers: int = 1, batch_size: int = 16) -> Params:
    return Params(tokenize=TokenizeConfig(tokenizer=str(TOKENIZER), input=str(tmp / "extracted"), output=str(out),
                                          workers=workers, batch_size=batch_size, metrics=str(tmp / "metrics.json")))


def _leftovers(folder: Path) -> list[str]:
    """Temporary names an interrupted atomic write would leave (`.NAME.*.tmp`)."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) if folder.is_dir() else []


def _cli(tmp: Path, *args: str, params: dict | None = None) -> subprocess.CompletedProcess:
    p = tmp / "params.yaml"
    p.write_text(yaml.safe_dump(params or {}))
    return subprocess.run([sys.executable, "-m", "biomed_llama", *args, "--params", str(p)], cwd=tmp,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def _one_error(out: subprocess.CompletedProcess) -> str:
    """The one `error:` line of stderr (besides it only a progress bar may be there), no traceback."""
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error: ")]
    assert "Traceback" not in out.stderr and len(errors) == 1, out.stderr
    return errors[0]


def test_text_that_is_not_utf8_is_one_bad_record_error(tmp_path):
    write_extracted(tmp_path / "extracted", {("pubmed_abstracts", "train"): [_docs(3)]})
    part = tmp_path / "extracted" / "pubmed_abstracts" / "train" / "part-00000.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    good = pq.read_table(part)
    raw = pa.array([b"fine", b"caf\xe9 au lait"], pa.binary())  # Latin-1 bytes in a string column
    pq.write_table(pa.table({"text": pa.Array.from_buffers(pa.string(), 2, raw.buffers())}), part)
    write_manifest(tmp_path / "extracted", stage="extract", params={})
    with pytest.raises(BadRecordError) as e:
        run_tokenize(_params(tmp_path, tmp_path / "tokens").tokenize)
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    assert f"{part}: row 2: text is not valid UTF-8" in str(e.value)
    assert not (tmp_path / "tokens").exists() and not _leftovers(tmp_path)
    pq.write_table(good, part)  # the input fixed: the rerun goes through
    write_manifest(tmp_path / "extracted", stage="extract", params={})
    run_tokenize(_params(tmp_path, tmp_path / "tokens").tokenize)
    assert verify(tmp_path / "tokens") == []


def test_a_lone_surrogate_in_a_pile_record_is_a_bad_record_not_a_traceback(tmp_path):
    import zstandard

    from biomed_llama.config import validate_params
    from biomed_llama.data.extract import run_extract

    good = b'{"text": "Aspirin and platelets.", "meta": {"pile_set_name": "PubMed Abstracts"}}'
    half = b'{"text": "half a pair \\ud800 here", "meta": {"pile_set_name": "PubMed Abstracts"}}'  # valid JSON
    src = tmp_path / "in" / "00.jsonl.zst"
    src.parent.mkdir()
    src.write_bytes(zstandard.ZstdCompressor().compress(good + b"\n" + half + b"\n"))

    def params(policy: str) -> Params:
        return validate_params({"extract": {"train": [str(src)], "val": [], "test": [], "on_bad_record": policy,
                                            "output": str(tmp_path / "out"), "metrics": str(tmp_path / "m.json")}})

    with pytest.raises(BadRecordError) as e:
        run_extract(params("abort").extract)
    assert e.value.exit_code == 4 and str(e.value).startswith(
        f"{src.as_posix()}:2: text is not valid Unicode (lone surrogate U+D800 at character 13)")
    assert not (tmp_path / "out").exists() and not _leftovers(tmp_path)
    metrics = run_extract(params("skip").extract)  # the rerun under skip counts it and keeps the rest
    assert (metrics["docs"], metrics["bad_records"]) == (1, 1) and verify(tmp_path / "out") == []


def test_params_file_not_utf8_is_one_config_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_bytes((REPO / "params.yaml").read_bytes() + b"# caf\xe9\n")
    out = subprocess.run([sys.executable, "-m", "biomed_llama", "extract", "--params", str(p)], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "not UTF-8 text" in _one_error(out) and not list(tmp_path.glob("data"))


def test_injected_disk_full_and_permission_errors_are_one_line(tmp_path, monkeypatch):
    from biomed_llama.data import tokens

    write_extracted(tmp_path / "extracted", {("pubmed_abstracts", "train"): [_docs(40)]})
    out = tmp_path / "tokens"

    def full(self, ids, lengths):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(tokens.TokenWriter, "append", full)
        with pytest.raises(OutputError) as e:
            run_tokenize(_params(tmp_path, out).tokenize)
    assert str(e.value).startswith(f"cannot write {out}: no space left on device; nothing was left half-written")
    assert e.value.exit_code == 1 and not out.exists() and not _leftovers(tmp_path)

    def denied(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    with monkeypatch.context() as m:
        m.setattr(os, "replace", denied)
        with pytest.raises(OutputError, match=rf"^{tmp_path / 'metrics.json'}: permission denied"):
            from biomed_llama.fsutil import atomic_write_json

            atomic_write_json(tmp_path / "metrics.json", {"x": 1})
    assert not _leftovers(tmp_path)
    run_tokenize(_params(tmp_path, out).tokenize)  # the fault gone, the rerun recovers
    assert verify(out) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 128 KiB tmpfs at tmp_path/disk (root only; elsewhere the injected test above covers the outcome)."""
    with tmpfs(tmp_path / "disk", "128k") as disk:
        yield disk


@pytest.mark.integration
def test_full_and_read_only_disk_on_a_tmpfs(tmp_path, small_disk):
    write_extracted(tmp_path / "extracted", {("pubmed_abstracts", "train"): [_docs(1500)]})  # ~1 MB of tokens
    params = {"tokenize": {"tokenizer": str(TOKENIZER), "input": str(tmp_path / "extracted"),
                           "output": str(small_disk / "tokens"), "metrics": str(tmp_path / "metrics.json")}}
    out = _cli(tmp_path, "tokenize", params=params)
    assert out.returncode == 1
    assert _one_error(out) == (f"error: cannot write {small_disk / 'tokens'}: no space left on device; nothing was "
                               f"left half-written (the previous copy, if any, is untouched)")
    assert list(small_disk.iterdir()) == []  # the temporary folder is gone too
    remount(small_disk, "ro")
    out = _cli(tmp_path, "tokenize", params=params)
    assert out.returncode == 1 and "read-only file system" in _one_error(out)
    remount(small_disk, "rw,size=16m")
    out = _cli(tmp_path, "tokenize", params=params)
    assert out.returncode == 0, out.stderr
    assert verify(small_disk / "tokens") == [] and _leftovers(small_disk) == []


@pytest.mark.integration
def test_extract_onto_a_full_tmpfs(tmp_path, small_disk):
    dest = small_disk / "extracted"
    (tmp_path / "data").symlink_to(REPO / "data")  # the demo's inputs, under their `inputs` root
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["extract"].update(output=str(dest), metrics=str(tmp_path / "extract.json"))
    remount(small_disk, "size=48k")
    out = _cli(tmp_path, "extract", params=params)
    assert out.returncode == 1 and _one_error(out).startswith(f"error: cannot write {dest}: no space left on device")
    assert list(small_disk.iterdir()) == []
    remount(small_disk, "size=16m")
    out = _cli(tmp_path, "extract", params=params)
    assert out.returncode == 0, out.stderr
    assert verify(dest) == []


@pytest.mark.integration
def test_kill_9_of_tokenize_leaves_no_worker_and_the_rerun_recovers(tmp_path):
    write_extracted(tmp_path / "extracted", {("pubmed_abstracts", "train"): [_docs(3000)]})
    out = tmp_path / "tokens"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"tokenize": {
        "tokenizer": str(TOKENIZER), "input": str(tmp_path / "extracted"), "output": str(out),
        "workers": 2, "batch_size": 1, "metrics": str(tmp_path / "metrics.json")}}))
    tag = P.new_tag()
    cmd = [sys.executable, "-m", "biomed_llama", "tokenize", "--params", str(params)]
    proc = P.start_tagged(cmd, tmp_path, {**os.environ, "PYTHONPATH": str(REPO)}, tag, tmp_path / "tokenize.log")
    try:
        # both pool workers and the resource tracker are up and the work is under way
        assert P.wait_until(lambda: len(P.children(proc.pid)) >= 3 and _leftovers(tmp_path), 120), \
            (tmp_path / "tokenize.log").read_text()
        os.kill(proc.pid, signal.SIGKILL)  # the stage's process only, as a crash or the OOM killer would
        proc.wait(30)
        assert P.wait_until(lambda: not P.tagged(tag), 15), f"left running: {P.tagged(tag)}"
    finally:
        P.kill_tagged(tag)
    assert not out.exists()  # only the temporary folder is left, which the rerun removes
    again = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert verify(out) == [] and _leftovers(tmp_path) == []
