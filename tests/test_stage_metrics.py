"""Metrics files hold the headline numbers `dvc metrics show` lists; the diagnostics go beside them."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from biomed_llama.stage_metrics import DETAILS_SUFFIX, details_path, write_metrics
from tests.helpers import REPO


def test_write_metrics_splits_headline_and_details(tmp_path: Path):
    path = tmp_path / "metrics" / "extract.json"
    write_metrics(path, {"docs": 3, "dropped": {"train": {"Github": 2}}, "chars": 10}, ("docs", "chars"))
    assert json.loads(path.read_text()) == {"docs": 3, "chars": 10}
    assert details_path(path) == tmp_path / "metrics" / "extract.details.json"
    assert json.loads(details_path(path).read_text()) == {"dropped": {"train": {"Github": 2}}}


def test_every_details_file_is_a_stage_output_and_no_metric():
    # DVC tracks the diagnostics (a rerun replaces them) but `dvc metrics show` does not list them
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    for name, body in stages.items():
        body = body.get("do", body)
        metrics = [next(iter(m)) for m in body.get("metrics", [])]
        outs = [o if isinstance(o, str) else next(iter(o)) for o in body.get("outs", [])]
        assert not [m for m in metrics if m.endswith(DETAILS_SUFFIX)], name
        for m in metrics:
            if name not in ("evaluate",):
                assert str(details_path(m)) in outs, (name, m)
    evaluate = [next(iter(m)) for m in stages["evaluate"]["metrics"]]
    assert evaluate == ["${eval.table_metrics}"]  # the table's cells; every per-model value is an output
