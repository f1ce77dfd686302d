"""Stage `extract`: subset filtering and counts, byte-identical outputs, bad input, tampering, merge, remote."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import urllib.request
from collections import defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from biomed_llama.config import validate_params
from biomed_llama.data import pile
from biomed_llama.data.extract import SCAN_DIR, _tasks, assemble, merge_extract, part_dir, plan_inputs, run_extract
from biomed_llama.data.scan import scan_all
from biomed_llama.data.pile import CorruptShard, iter_lines
from biomed_llama.data.shards import SCHEMA, ParquetRows, PartTask, plan_parts, write_part
from biomed_llama.errors import BadRecordError, ConfigError, IntegrityError, UserError
from biomed_llama.provenance import require_verified, verify

SAMPLE = "data/sample/pile"
ABSTRACT = {"text": "BACKGROUND: a generated abstract.", "meta": {"pile_set_name": "PubMed Abstracts"}}
CENTRAL = {"text": "Introduction\n\nA generated paper.", "meta": {"pile_set_name": "PubMed Central"}}
WIKI = {"text": "A town.", "meta": {"pile_set_name": "Wikipedia (en)"}}


def write_zst(path: Path, lines: list[str | bytes], frames: int = 1) -> Path:
    """Write `lines` (newline-terminated) as a zstd file of `frames` frames."""
    raw = [ln.encode() if isinstance(ln, str) else ln for ln in lines]
    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    step = max(1, -(-len(raw) // frames))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(cctx.compress(b"".join(x + b"\n" for x in raw[i:i + step]))
                              for i in range(0, len(raw), step)))
    return path


def make_params(tmp: Path, **extract):
    """Params whose extract section reads/writes under `tmp` (no val/test unless given)."""
    section = {"train": [], "val": [], "test": [], "rows_per_shard": 64, "workers": 1,
               "output": str(tmp / "out"), "metrics": str(tmp / "metrics.json"), **extract}
    return validate_params({"extract": section})


def read_rows(out: Path) -> dict[tuple[str, str], list[tuple[str, str, int]]]:
    """{(slug, split): [(text, source, line)]} of an extract output, parts in order."""
    rows = {}
    for split_dir in sorted(p for p in out.glob("*/*") if p.is_dir()):
        t = pa.concat_tables([pq.read_table(f) for f in sorted(split_dir.glob("part-*.parquet"))])
        rows[(split_dir.parent.name, split_dir.name)] = list(zip(*(t.column(c).to_pylist() for c in SCHEMA.names)))
    return rows


def data_files(out: Path) -> dict[str, bytes]:
    """Every output file's bytes except the manifest (whose environment block names the run)."""
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "manifest.json"}


# --- the committed sample: 1 worker, 2 workers, 2 shards + merge -------------------------------

@pytest.fixture(scope="module")
def sample_runs(repo_root: Path, tmp_path_factory):
    """Extract the sample three ways; return {name: (output folder, metrics file bytes, metrics)}."""
    base = tmp_path_factory.mktemp("sample")
    pats = {"train": [f"{repo_root}/{SAMPLE}/train/*.jsonl.zst"], "val": [f"{repo_root}/{SAMPLE}/val.jsonl.zst"],
            "test": [f"{repo_root}/{SAMPLE}/test.jsonl.zst"]}
    runs = {}
    for name, kw in {"w1": dict(workers=1), "w2": dict(workers=2), "shards": None}.items():
        params = make_params(base / name, **pats)
        if kw is None:
            for i in range(2):
                run_extract(params.extract, workers=1, num_shards=2, shard_index=i)
            metrics = merge_extract(params.extract, num_shards=2)
        else:
            metrics = run_extract(params.extract, **kw)
        runs[name] = (base / name / "out", (base / name / "metrics.json").read_bytes(), metrics, params)
    return runs


def _expected_sample(repo_root: Path):
    """Independent reading of the sample: {(subset, split): [(text, source, line)]}, dropped, bad."""
    files = {"train": sorted((repo_root / SAMPLE / "train").glob("*.jsonl.zst")),
             "val": [repo_root / SAMPLE / "val.jsonl.zst"], "test": [repo_root / SAMPLE / "test.jsonl.zst"]}
    rows, dropped, bad = defaultdict(list), defaultdict(int), 0
    for split, paths in files.items():
        for path in paths:
            with open(path, "rb") as f:
                text = io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(f), encoding="utf-8").read()
            for lineno, line in enumerate(text.splitlines(), 1):
                try:
                    rec = json.loads(line)
                    subset = rec["meta"]["pile_set_name"]
                    assert rec["text"]
                except (ValueError, KeyError, AssertionError):
                    bad += 1
                    continue
                if subset.startswith("PubMed"):
                    rows[(subset, split)].append((rec["text"], path.as_posix(), lineno))
                else:
                    dropped[(split, subset)] += 1
    return rows, dropped, bad


def test_sample_subset_filtering_counts_and_rows(sample_runs, repo_root: Path):
    out, _, metrics, _ = sample_runs["w1"]
    rows, dropped, bad = _expected_sample(repo_root)
    got = read_rows(out)
    slugs = {"PubMed Abstracts": "pubmed_abstracts", "PubMed Central": "pubmed_central"}
    assert set(got) == {(slug, s) for slug in slugs.values() for s in ("train", "val", "test")}
    for (subset, split), want in rows.items():
        assert got[(slugs[subset], split)] == want
        m = metrics["subsets"][slugs[subset]][split]
        assert m["docs"] == len(want) and m["chars"] == sum(len(t) for t, _, _ in want)
        assert m["bytes"] == sum(len(t.encode()) for t, _, _ in want)
    assert metrics["subsets"]["pubmed_abstracts"]["train"]["docs"] == 180  # the layout of make_sample.py
    assert metrics["subsets"]["pubmed_central"]["test"]["docs"] == 14
    assert {(s, k): v for s, d in metrics["dropped"].items() for k, v in d.items()} == dict(dropped)
    assert metrics["bad_records"] == bad == 4 and metrics["bad_files"] == 0
    assert metrics["lines"] == metrics["docs"] + sum(dropped.values()) + bad
    # Parts of rows_per_shard rows: 180 train abstracts → 64 + 64 + 52.
    parts = sorted((out / "pubmed_abstracts" / "train").glob("part-*.parquet"))
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [64, 64, 52]
    require_verified(out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "extract" and len(manifest["inputs"]) == 4
    assert [(b["line"], b["reason"]) for b in manifest["extra"]["bad_records"]] == [
        (7, "invalid JSON (Expecting ',' delimiter at column 48)"), (23, "empty text"), (58, "no text"),
        (91, "no meta.pile_set_name")]
    assert all(b["file"].endswith("train/01.jsonl.zst") for b in manifest["extra"]["bad_records"])


def test_byte_identical_whatever_workers_or_shards(sample_runs):
    out1, metrics1, _, _ = sample_runs["w1"]
    ref = data_files(out1)
    assert len(ref) == 9
    for name in ("w2", "shards"):
        out, metrics, _, _ = sample_runs[name]
        assert data_files(out) == ref, name
        assert metrics == metrics1, name


def test_rerun_gives_identical_bytes(sample_runs, tmp_path: Path):
    out1, _, _, params = sample_runs["w1"]
    again = params.model_copy(deep=True)
    again.extract.output = str(tmp_path / "again")
    again.extract.metrics = str(tmp_path / "m.json")
    run_extract(again.extract, workers=1)
    assert data_files(tmp_path / "again") == data_files(out1)


def test_tampered_output_fails_verify_and_is_refused(sample_runs, tmp_path: Path, repo_root: Path):
    out = tmp_path / "extracted"
    shutil.copytree(sample_runs["w1"][0], out)
    victim = out / "pubmed_central" / "val" / "part-00000.parquet"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    assert verify(out) == [f"{victim}: sha256 differs from manifest"]
    with pytest.raises(IntegrityError, match="refusing input .*part-00000.parquet"):
        require_verified(out)  # what tokenize calls on its input folder
    cli = subprocess.run([sys.executable, "-m", "biomed_llama", "verify", str(out)], capture_output=True,
                         text=True, cwd=repo_root, timeout=120)
    assert cli.returncode == 3
    assert cli.stderr.count("\n") == 1 and cli.stderr.startswith("error: refusing input")
    (out / "pubmed_central" / "val" / "extra.parquet").write_bytes(b"x")  # an added file is refused too
    victim.unlink()
    assert len(verify(out)) == 2


# --- merge -------------------------------------------------------------------------------------

def _two_file_params(tmp: Path, **kw):
    write_zst(tmp / "in" / "a.jsonl.zst", [json.dumps(ABSTRACT)] * 3)
    write_zst(tmp / "in" / "b.jsonl.zst", [json.dumps(CENTRAL)] * 2)
    return make_params(tmp, train=[str(tmp / "in" / "*.jsonl.zst")], **kw)


def test_merge_refuses_missing_tampered_or_foreign_parts(tmp_path: Path):
    params = _two_file_params(tmp_path)
    run_extract(params.extract, num_shards=2, shard_index=0)
    with pytest.raises(UserError, match="missing part.*shard-1-of-2"):
        merge_extract(params.extract, num_shards=2)
    run_extract(params.extract, num_shards=2, shard_index=1)
    part1 = part_dir(params.extract, 2, 1)
    assert (part1 / "manifest.json").is_file() and not (tmp_path / "out").exists()
    other = params.model_copy(deep=True)
    other.extract.rows_per_shard = 7
    with pytest.raises(UserError, match="other params or input files"):
        merge_extract(other.extract, num_shards=2)
    (part1 / "reports.json").write_text("[]")
    with pytest.raises(IntegrityError, match="reports.json"):
        merge_extract(params.extract, num_shards=2)
    assert not (tmp_path / "out").exists()


def test_manifest_bytes_do_not_depend_on_workers(tmp_path: Path):
    params = _two_file_params(tmp_path)
    run_extract(params.extract, workers=1)
    one = (tmp_path / "out" / "manifest.json").read_bytes()
    shutil.rmtree(tmp_path / "out")
    run_extract(params.extract, workers=2)
    assert (tmp_path / "out" / "manifest.json").read_bytes() == one
    assert b'"workers"' not in one


def test_an_intermediate_changed_during_the_run_is_an_integrity_error(tmp_path: Path):
    params = _two_file_params(tmp_path)
    files = plan_inputs(params.extract)
    reports = scan_all(_tasks(params.extract, files, tmp_path / "scan"), 1)
    inter = tmp_path / "scan" / SCAN_DIR / "00000" / "pubmed_abstracts.parquet"
    pq.write_table(pq.read_table(inter).slice(0, 1), inter)  # 3 kept rows → 1
    with pytest.raises(IntegrityError, match="^extract: the intermediate files hold 3 rows where the scan counted 5"):
        assemble(params.extract, files, reports, lambda i: tmp_path / "scan" / SCAN_DIR / f"{i:05d}",
                 tmp_path / "out", 1)


def test_bad_sharding_arguments_are_config_errors(tmp_path: Path):
    params = _two_file_params(tmp_path)
    for kw in (dict(workers=0), dict(num_shards=0), dict(num_shards=2, shard_index=2), dict(shard_index=-1)):
        with pytest.raises(ConfigError):
            run_extract(params.extract, **kw)
    with pytest.raises(ConfigError):
        merge_extract(params.extract, num_shards=0)


# --- bad input ---------------------------------------------------------------------------------

BAD_LINES = [
    json.dumps(ABSTRACT),                                        # 1 kept
    '{"text": "unterminated, "meta": {}}',                       # 2 invalid JSON
    "[1, 2]",                                                    # 3 not an object
    json.dumps({"text": 5, "meta": ABSTRACT["meta"]}),           # 4 text not a string
    json.dumps({"text": "  \n", "meta": ABSTRACT["meta"]}),      # 5 empty text
    json.dumps({"meta": CENTRAL["meta"]}),                       # 6 no text
    json.dumps({"text": "x"}),                                   # 7 no meta
    b'{"text": "\xff\xfe", "meta": {"pile_set_name": "PubMed Central"}}',  # 8 invalid UTF-8
    "",                                                          # 9 blank line
    json.dumps(CENTRAL),                                         # 10 kept
    json.dumps(WIKI),                                            # 11 dropped
]
BAD_REASONS = [(2, "invalid JSON"), (3, "not a JSON object"), (4, "text is not a string"), (5, "empty text"),
               (6, "no text"), (7, "no meta.pile_set_name"), (8, "invalid UTF-8"), (9, "blank line")]


def test_bad_lines_are_counted_reported_and_skipped(tmp_path: Path):
    src = write_zst(tmp_path / "in" / "bad.jsonl.zst", BAD_LINES)
    params = make_params(tmp_path, train=[str(src)], max_reported_bad=5)
    metrics = run_extract(params.extract)
    assert metrics["bad_records"] == 8 and metrics["docs"] == 2 and metrics["lines"] == 11
    assert metrics["dropped"]["train"] == {"Wikipedia (en)": 1}
    extra = json.loads((tmp_path / "out" / "manifest.json").read_text())["extra"]
    listed = [(b["line"], b["reason"].split(" (")[0]) for b in extra["bad_records"]]
    assert listed == BAD_REASONS[:5]  # capped at max_reported_bad, all counted
    assert all(b["file"] == src.as_posix() for b in extra["bad_records"])
    assert read_rows(tmp_path / "out")[("pubmed_central", "train")] == [(CENTRAL["text"], src.as_posix(), 10)]


@pytest.mark.parametrize("line", [2, 5, 6, 7])
def test_bad_line_aborts_without_touching_the_output(tmp_path: Path, line: int):
    good = write_zst(tmp_path / "in" / "good.jsonl.zst", [json.dumps(ABSTRACT)])
    params = make_params(tmp_path, train=[str(good)])
    run_extract(params.extract)
    before = data_files(tmp_path / "out")
    bad = write_zst(tmp_path / "in" / "z.jsonl.zst", [json.dumps(ABSTRACT)] * (line - 1) + [BAD_LINES[line - 1]])
    params = make_params(tmp_path, train=[str(tmp_path / "in" / "*.zst")], on_bad_record="abort")
    with pytest.raises(BadRecordError, match=f"^{bad.as_posix()}:{line}: {dict(BAD_REASONS)[line]}") as e:
        run_extract(params.extract)
    assert e.value.exit_code == 4 and "\n" not in str(e.value)
    assert data_files(tmp_path / "out") == before  # the old output is intact…
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "metrics.details.json", "metrics.json", "out"]  # …no temp left


def _truncated(tmp: Path, n: int = 4000) -> tuple[Path, list[str]]:
    lines = [json.dumps({**(ABSTRACT if i % 3 else WIKI), "text": f"document {i} " * 20}) for i in range(n)]
    path = write_zst(tmp / "in" / "t.jsonl.zst", lines)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, lines


def test_truncated_file_is_dropped_whole_under_skip(tmp_path: Path):
    bad, lines = _truncated(tmp_path)
    good = write_zst(tmp_path / "in" / "a.jsonl.zst", [json.dumps(ABSTRACT)] * 2)
    params = make_params(tmp_path, train=[str(tmp_path / "in" / "*.zst")])
    metrics = run_extract(params.extract)
    extra = json.loads((tmp_path / "out" / "manifest.json").read_text())["extra"]
    [bf] = extra["bad_files"]
    assert bf["file"] == bad.as_posix() and "truncated" in bf["reason"]
    assert 0 < bf["line"] < len(lines)  # lines before the damage were read …
    assert bf["rows_discarded"] == sum(1 for i in range(bf["line"]) if i % 3)  # … and are counted as discarded
    assert metrics["bad_files"] == 1 and metrics["rows_discarded_from_bad_files"] == bf["rows_discarded"]
    rows = read_rows(tmp_path / "out")[("pubmed_abstracts", "train")]
    assert [(src, ln) for _, src, ln in rows] == [(good.as_posix(), 1), (good.as_posix(), 2)]


def test_truncated_file_aborts_from_a_worker_process(tmp_path: Path):
    bad, _ = _truncated(tmp_path)
    write_zst(tmp_path / "in" / "a.jsonl.zst", [json.dumps(ABSTRACT)] * 2)
    params = make_params(tmp_path, train=[str(tmp_path / "in" / "*.zst")], on_bad_record="abort", workers=2)
    with pytest.raises(BadRecordError, match=f"^{bad.as_posix()}: corrupt or truncated zstd stream after line \\d+"):
        run_extract(params.extract)
    assert not (tmp_path / "out").exists()


def _damage(kind: str, data: bytes) -> bytes:
    if kind == "truncated":
        return data[:-7]
    if kind == "bit flip":
        b = bytearray(data)
        b[len(b) // 2] ^= 0x40
        return bytes(b)
    if kind == "trailing garbage":
        return data + b"garbage after the last frame"
    return {"empty": b"", "not zstd": b'{"text": "plain json, not compressed"}\n'}[kind]


@pytest.mark.parametrize("kind", ["truncated", "bit flip", "trailing garbage", "empty", "not zstd"])
def test_iter_lines_raises_on_damaged_streams(tmp_path: Path, kind: str):
    path = write_zst(tmp_path / "x.jsonl.zst", [f'{{"n": {i}}}' for i in range(2000)])
    path.write_bytes(_damage(kind, path.read_bytes()))
    seen = []
    with pytest.raises(CorruptShard) as e:
        for lineno, raw in iter_lines(path):
            seen.append((lineno, raw))
    assert e.value.line == len(seen) and e.value.path == str(path)
    assert all(raw == f'{{"n": {i}}}'.encode() for i, (_, raw) in enumerate(seen))  # no partial line leaks out


def test_iter_lines_reads_every_frame_and_a_last_line_without_newline(tmp_path: Path):
    lines = [f"line {i}" for i in range(100)]
    path = write_zst(tmp_path / "multi.jsonl.zst", lines, frames=7)
    assert [raw.decode() for _, raw in iter_lines(path)] == lines
    path.write_bytes(zstandard.ZstdCompressor().compress(b"a\nb"))
    assert list(iter_lines(path)) == [(1, b"a"), (2, b"b")]


# --- inputs, remote sources, writer ------------------------------------------------------------

def test_input_errors(tmp_path: Path):
    with pytest.raises(UserError, match="extract.train: no file matches"):
        run_extract(make_params(tmp_path, train=[str(tmp_path / "nothing-*.zst")]).extract)
    f = write_zst(tmp_path / "in" / "a.jsonl.zst", [json.dumps(ABSTRACT)])
    with pytest.raises(UserError, match="listed in both train and val"):
        run_extract(make_params(tmp_path, train=[str(f)], val=[str(f)]).extract)


def test_nothing_is_downloaded_without_remote(tmp_path: Path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("network access")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(pile, "_download_url", no_network)
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", no_network)
    params = _two_file_params(tmp_path)
    assert params.extract.remote is None
    assert run_extract(params.extract)["docs"] == 5
    # With a remote whose shards are already in the cache, nothing is fetched either.
    cache = tmp_path / "cache"
    write_zst(cache / "train" / "00.jsonl.zst", [json.dumps(CENTRAL)])
    remote = make_params(tmp_path, remote="https://example.invalid/pile/", cache=str(cache),
                         train=["train/00.jsonl.zst"])
    assert run_extract(remote.extract)["subsets"]["pubmed_central"]["train"]["docs"] == 1


def test_remote_resolution():
    assert pile.remote_url("https://host/pile/", "train/00.jsonl.zst") == "https://host/pile/train/00.jsonl.zst"
    assert pile.remote_url("https://host/p", "/val file.jsonl.zst") == "https://host/p/val%20file.jsonl.zst"
    assert pile.hub_repo("hf://datasets/owner/pile@v1") == ("owner/pile", "v1")
    assert pile.hub_repo("hf://datasets/owner/pile") == ("owner/pile", None)
    assert pile.remote_names("https://h/p", ["val.jsonl.zst", "test.jsonl.zst"]) == ["test.jsonl.zst", "val.jsonl.zst"]
    with pytest.raises(UserError, match="glob patterns need a hf://datasets/ source"):
        pile.remote_names("https://h/p", ["train/*.jsonl.zst"])
    for bad in ("ftp://x/y", "hf://datasets/only-owner", "owner/name"):
        with pytest.raises(ConfigError, match="extract: Value error, remote must be"):
            validate_params({"extract": {"remote": bad}})


def test_parquet_bytes_do_not_depend_on_chunking(tmp_path: Path):
    rows = [(f"doc {i} " * (i % 13), "src", i) for i in range(3000)]

    def table(rs):
        return pa.table([list(c) for c in zip(*rs)], schema=SCHEMA)

    outs = []
    for name, chunk in (("one", 3000), ("small", 7), ("odd", 1001)):
        w = ParquetRows(tmp_path / name / "x.parquet")
        for i in range(0, len(rows), chunk):
            w.write(table(rows[i:i + chunk]))
        assert w.close() == 3000
        outs.append((tmp_path / name / "x.parquet").read_bytes())
    assert outs[0] == outs[1] == outs[2]
    meta = pq.ParquetFile(tmp_path / "one" / "x.parquet").metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [1024, 1024, 952]
    assert ParquetRows(tmp_path / "empty.parquet").close() == 0
    assert pq.read_table(tmp_path / "empty.parquet").schema == SCHEMA


def test_parts_planned_from_counts_equal_one_sequential_pass(tmp_path: Path):
    srcs = []
    for k, n in enumerate([5, 0, 2500, 1, 1300]):
        path = tmp_path / f"s{k}.parquet"
        w = ParquetRows(path)
        w.write(pa.table([[f"t{k}-{i}" for i in range(n)], ["s"] * n, list(range(n))], schema=SCHEMA))
        w.close()
        srcs.append((str(path), n))
    plan = plan_parts([s for s in srcs if s[1]], 1500)
    assert [sum(b - a for _, a, b in p) for p in plan] == [1500, 1500, 806]
    assert plan[1] == [(srcs[2][0], 1495, 2500), (srcs[3][0], 0, 1), (srcs[4][0], 0, 494)]
    got = []
    for k, pieces in enumerate(plan):
        out = tmp_path / f"p{k}.parquet"
        assert write_part(PartTask(str(out), tuple(pieces))) == [1500, 1500, 806][k]
        got.append(pq.read_table(out))
    everything = pa.concat_tables([pq.read_table(p) for p, n in srcs])
    assert pa.concat_tables(got).equals(everything)
    assert plan_parts([], 10) == [[]]
