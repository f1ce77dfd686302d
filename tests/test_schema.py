"""StrictModel: a scalar given for a list field is a one-item list, in a params file, through `--set` and on the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Optional, Union

import pytest

from biomed_llama.config import load_params
from biomed_llama.errors import ConfigError
from biomed_llama.schema import StrictModel

REPO = Path(__file__).resolve().parents[1]


class _Section(StrictModel):
    paths: list[str] = []
    """A list."""
    maybe: Optional[list[int]] = None
    """An optional list."""
    either: Union[str, list[str]] = "x"
    """A scalar or a list: a scalar stays one."""
    pair: tuple[float, float] = (0.0, 1.0)
    """A tuple is not a list."""


def test_scalar_for_a_list_field_is_a_one_item_list():
    s = _Section(paths="a.jsonl", maybe=3, either="y")
    assert s.paths == ["a.jsonl"] and s.maybe == [3] and s.either == "y"
    s.paths = "b.jsonl"  # assignments are validated the same way
    assert s.paths == ["b.jsonl"]
    assert _Section(paths=["a", "b"]).paths == ["a", "b"] and _Section(maybe=None).maybe is None
    with pytest.raises(ValueError):
        _Section(pair=1.0)


def test_scalar_override_of_every_kind_of_list_param():
    params = load_params(REPO / "params.yaml", ["extract.train=data/sample/pile/one.jsonl.zst", "extract.subsets=PubMed Central",
                                                "pretrain.subsets=pubmed_central", "eval.shots=zero"])
    assert params.extract.train == ["data/sample/pile/one.jsonl.zst"] and params.extract.subsets == ["PubMed Central"]
    assert params.pretrain.subsets == ["pubmed_central"] and params.eval.shots == ["zero"]
    with pytest.raises(ConfigError, match=r"extract.subsets.0: Input should be a valid string \(got 7\)"):
        load_params(REPO / "params.yaml", ["extract.subsets=7"])


def test_extract_train_takes_one_path_on_the_cli(tmp_path):
    """`biomed-llama extract --set extract.train=PATH` reads that one shard (it was refused: not a list)."""
    pile = REPO / "data" / "sample" / "pile"
    shard, val, test = pile / "train" / "00.jsonl.zst", pile / "val.jsonl.zst", pile / "test.jsonl.zst"
    sets = [f"inputs.pile={pile}", f"extract.train={shard}", f"extract.val={val}", f"extract.test={test}", "extract.workers=1",
            f"extract.output={tmp_path / 'out'}", f"extract.metrics={tmp_path / 'metrics.json'}"]
    cmd = [sys.executable, "-m", "biomed_llama", "extract", "--params", str(REPO / "params.yaml")]
    for item in sets:
        cmd += ["--set", item]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["params"]["train"] == [str(shard)]
    assert sorted(manifest["inputs"]) == sorted(map(str, (shard, val, test)))  # one train shard of the two
