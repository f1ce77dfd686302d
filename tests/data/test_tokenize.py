"""The tokenize stage: HF-identical ids + EOS, worker-count-independent bytes, refused tampering, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from biomed_llama.config import Params
from biomed_llama.data.config import TokenizeConfig
from biomed_llama.data.tokenize import find_splits, load_tokenizer_spec, run_tokenize
from biomed_llama.data.tokens import open_token_stores
from biomed_llama.errors import IntegrityError, UserError
from biomed_llama.provenance import verify, write_manifest
from biomed_llama.testing import write_extracted

# Documents meant to stress the contract: unicode, an empty document, whitespace runs, a special
# token's text inside a document (tokenized exactly as the HF tokenizer does) and a long one.
SPECIAL = [
    "Interleukin-6 (IL-6) levels rose; p < 0.05.",
    "",
    "  leading spaces and\ttabs\n\nnew lines  ",
    "α-synuclein, β-amyloid and 5 μg/mL at 37 °C — naïve café.",
    "A document that mentions </s> and <s> inside its text.",
    "Long " + "randomized controlled trial of metformin in type 2 diabetes. " * 60,
]
WORDS = "the of patients cell protein expression tumor mice receptor kinase increased significantly".split()


def make_docs(seed: int, n: int) -> list[str]:
    """Deterministic pseudo-abstracts of varying length."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 80)))) + "." for _ in range(n)]


TREE = {
    ("pubmed_abstracts", "train"): [SPECIAL + make_docs(1, 40), make_docs(2, 23)],
    ("pubmed_abstracts", "val"): [make_docs(3, 9)],
    ("pubmed_central", "train"): [make_docs(4, 5), [], make_docs(5, 17)],
    ("pubmed_central", "test"): [[]],
}


def params_for(tmp: Path, tokenizer: Path, out: str, workers: int) -> Params:
    """Params whose tokenize section reads tmp/extracted and writes tmp/<out> (batch of 7 documents)."""
    cfg = TokenizeConfig(tokenizer=str(tokenizer), input=str(tmp / "extracted"), output=str(tmp / out),
                         workers=workers, batch_size=7, metrics=str(tmp / f"metrics-{out}.json"))
    return Params(tokenize=cfg)


@pytest.fixture(scope="module")
def tokenizer_dir(repo_root: Path) -> Path:
    path = repo_root / "data" / "sample" / "tokenizer"
    assert (path / "tokenizer.json").is_file(), "the demo tokenizer is committed by scripts/make_sample.py"
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tokenizer_dir: Path) -> dict:
    """Tokenize the same input with 1 and with 2 workers (the expensive part, shared by the tests)."""
    import shutil

    tmp = tmp_path_factory.mktemp("tok")
    write_extracted(tmp / "extracted", TREE)
    # Same params but the worker count, same output folder: the 1-worker output is moved aside.
    metrics = {1: run_tokenize(params_for(tmp, tokenizer_dir, "tokens", 1).tokenize)}
    shutil.move(tmp / "tokens", tmp / "tokens-1")
    metrics[2] = run_tokenize(params_for(tmp, tokenizer_dir, "tokens", 2).tokenize)
    return {"tmp": tmp, "metrics": metrics, "out": {1: tmp / "tokens-1", 2: tmp / "tokens"}}


def test_outputs_are_byte_identical_with_1_and_2_workers(runs):
    out1, out2 = runs["out"][1], runs["out"][2]
    files1 = sorted(p.relative_to(out1).as_posix() for p in out1.rglob("*") if p.is_file())
    files2 = sorted(p.relative_to(out2).as_posix() for p in out2.rglob("*") if p.is_file())
    assert files1 == files2
    assert "pubmed_central/test/tokens.bin" in files1  # an empty split still gets an (empty) store
    for rel in files1:
        if rel != "manifest.json":  # the manifest also holds the environment (git dirty state may move)
            assert (out1 / rel).read_bytes() == (out2 / rel).read_bytes(), rel
    m1, m2 = (json.loads((o / "manifest.json").read_text()) for o in (out1, out2))
    assert m1["files"] == m2["files"] and m1["params"] == m2["params"] and m1["inputs"] == m2["inputs"]
    assert verify(out1) == [] and verify(out2) == []


def test_each_document_decodes_to_its_text_plus_eos_and_matches_hf(runs, tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    stores = open_token_stores(runs["out"][2])
    assert sorted(stores) == sorted(TREE)
    for key, shards in TREE.items():
        texts = [t for shard in shards for t in shard]
        store = stores[key]
        assert store.n_docs == len(texts)
        expected = tok(texts, add_special_tokens=False)["input_ids"] if texts else []
        for i, text in enumerate(texts):
            ids = store.doc(i).tolist()
            assert ids == expected[i] + [tok.eos_token_id]
            assert tok.decode(ids, clean_up_tokenization_spaces=False) == text + tok.eos_token


def test_meta_and_metrics_count_documents_tokens_and_bytes(runs):
    metrics = runs["metrics"][1]
    stores = open_token_stores(runs["out"][1])
    for (slug, split), store in stores.items():
        texts = [t for shard in TREE[(slug, split)] for t in shard]
        assert store.meta["dtype"] == "uint16" and store.meta["eos_id"] == 2 and store.meta["bos_id"] == 1
        assert store.tokens.dtype == np.dtype("<u2")
        got = metrics["splits"][f"{slug}/{split}"]
        assert got == {"docs": len(texts), "tokens": store.n_tokens,
                       "text_bytes": sum(len(t.encode()) for t in texts)}
    total = metrics["total"]
    assert total["docs"] == sum(len(t) for shards in TREE.values() for t in shards)
    assert total["tokens"] == sum(s.n_tokens for s in stores.values())
    assert total["tokens_per_s"] > 0 and total["mb_per_s"] > 0 and total["workers"] == 1
    assert runs["metrics"][2]["total"]["workers"] == 2
    assert runs["metrics"][2]["splits"] == metrics["splits"]


def test_tampered_output_fails_verify_and_is_refused_by_the_reader(runs, tmp_path):
    import shutil

    out = tmp_path / "tokens"
    shutil.copytree(runs["out"][1], out)
    path = out / "pubmed_abstracts" / "train" / "tokens.bin"
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF  # same size, different content: only the hash can tell
    path.write_bytes(bytes(data))
    problems = verify(out)
    assert len(problems) == 1 and "pubmed_abstracts/train/tokens.bin" in problems[0]
    with pytest.raises(IntegrityError, match="tokens.bin"):
        open_token_stores(out)


def test_tampered_input_is_refused_and_leaves_no_output(runs, tokenizer_dir, tmp_path):
    import shutil

    shutil.copytree(runs["tmp"] / "extracted", tmp_path / "extracted")
    shard = tmp_path / "extracted" / "pubmed_abstracts" / "val" / "part-00000.parquet"
    pq.write_table(pa.table({"text": ["an injected document"]}), shard)
    with pytest.raises(IntegrityError, match="part-00000.parquet"):
        run_tokenize(params_for(tmp_path, tokenizer_dir, "tokens", 1).tokenize)
    assert not (tmp_path / "tokens").exists()


def test_manifest_records_params_but_not_workers_and_the_tokenizer_files(runs):
    params = [json.loads((runs["out"][w] / "manifest.json").read_text())["params"] for w in (1, 2)]
    assert params[0] == params[1]
    assert params[0]["batch_size"] == 7 and "workers" not in params[0] and params[0]["append_eos"] is True
    # Inputs: the extract output (by its manifest) and the tokenizer's own files, never model weights.
    inputs = json.loads((runs["out"][1] / "manifest.json").read_text())["inputs"]
    assert "manifest_sha256" in inputs[str(runs["tmp"] / "extracted")]
    assert {Path(k).name for k in inputs} >= {"tokenizer.json", "tokenizer_config.json"}


def test_bad_tokenizer_directory_is_a_one_line_user_error(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_tokenizer_spec(tmp_path / "missing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "tokenizer.json").write_text("{not json")
    with pytest.raises(UserError) as err:
        load_tokenizer_spec(tmp_path / "broken")
    assert "\n" not in str(err.value)


def test_input_without_split_folders_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="run `biomed-llama extract`"):
        find_splits(tmp_path)


def test_zero_workers_is_refused_before_any_work(tmp_path, tokenizer_dir):
    from biomed_llama.errors import ConfigError

    with pytest.raises(ConfigError, match="--workers must be >= 1"):  # a params problem: exit 2, as extract
        run_tokenize(params_for(tmp_path, tokenizer_dir, "tokens", 1).tokenize, workers=0)
    assert not (tmp_path / "tokens").exists()


def test_cli_tokenize_runs_the_stage(runs, tokenizer_dir, tmp_path, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from biomed_llama.cli.common import app
    import biomed_llama.cli.data  # noqa: F401  (registers the data commands)

    monkeypatch.chdir(tmp_path)
    cfg = {"tokenize": {"tokenizer": str(tokenizer_dir), "input": str(runs["tmp"] / "extracted"),
                        "output": "tokens", "batch_size": 7}}
    Path("params.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["tokenize", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "tokens" / "pubmed_abstracts" / "train" / "tokens.bin").read_bytes() == \
        (runs["out"][1] / "pubmed_abstracts" / "train" / "tokens.bin").read_bytes()
    assert json.loads((tmp_path / "metrics" / "tokenize.json").read_text())["total"]["docs"] > 0


def test_chunk_encoder_matches_hf_call_for_a_llama_style_tokenizer(tmp_path, llama_sp_tokenizer):
    from transformers import AutoTokenizer

    from biomed_llama.data.tokenize import ChunkEncoder

    texts = SPECIAL + make_docs(7, 30) + ["unseen: 漢字 ∑ 🧬"]
    folder = llama_sp_tokenizer(tmp_path / "llama", texts[:-1])
    tok = AutoTokenizer.from_pretrained(str(folder))
    assert tok("x")["input_ids"][0] == 1  # this tokenizer adds BOS by default; the stage must not
    spec = load_tokenizer_spec(folder)
    ids, lengths = ChunkEncoder(spec)(texts)
    expected = [x + [2] for x in tok(texts, add_special_tokens=False)["input_ids"]]
    assert lengths.tolist() == [len(x) for x in expected]
    assert ids.dtype == np.dtype("<u2") and ids.tolist() == [t for x in expected for t in x]
    bare_ids, bare_lengths = ChunkEncoder(load_tokenizer_spec(folder, append_eos=False))(texts)
    assert bare_lengths.tolist() == [len(x) - 1 for x in expected]
    assert bare_ids.tolist() == [t for x in expected for t in x[:-1]]


def test_a_failure_midway_leaves_no_output(tmp_path, tokenizer_dir):
    write_extracted(tmp_path / "extracted", {("pubmed_abstracts", "train"): [make_docs(8, 10)]})
    shard = tmp_path / "extracted" / "pubmed_abstracts" / "train" / "part-00001.parquet"
    pq.write_table(pa.table({"text": pa.array(["fine", None], pa.string())}), shard)
    write_manifest(tmp_path / "extracted", stage="extract", params={})
    with pytest.raises(UserError, match="part-00001.parquet: 1 rows with null text"):
        run_tokenize(params_for(tmp_path, tokenizer_dir, "tokens", 1).tokenize)
    assert not (tmp_path / "tokens").exists() and not list(tmp_path.glob(".tokens.*"))
