"""The exported model evaluated by the stock `lm_eval --model hf --include_path <tasks>` CLI gives
exactly the numbers of the `evaluate` stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from biomed_llama.eval.harness import Run, lm_eval_command

pytestmark = pytest.mark.integration


def test_stock_lm_eval_cli_matches_evaluate(pipeline, tmp_path):
    cfg, metrics = pipeline
    path = cfg.models["tiny"].path
    # One CLI call, two tasks: few-shot count 3 does not touch the rolling-perplexity task
    # (its requests are the document alone), so both compare with the stage's runs.
    run = Run("tiny", "seed", "medqa4", 3)
    cmd = lm_eval_command(cfg, path, run, str(tmp_path / "out"))
    cmd[cmd.index("--tasks") + 1] = "biomed_seed_medqa4,biomed_seed_pubmed_a"
    cmd[0] = str(Path(sys.executable).parent / "lm_eval")
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    (results_file,) = sorted((tmp_path / "out").rglob("results_*.json"))
    res = json.loads(results_file.read_text())["results"]
    m = metrics["tiny"]
    assert res["biomed_seed_medqa4"]["acc,none"] == m["seed.medqa4.3shot.acc"]
    assert res["biomed_seed_medqa4"]["acc_norm,none"] == m["seed.medqa4.3shot.acc_norm"]
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert res["biomed_seed_pubmed_a"][f"{name},none"] == m[f"seed.pubmed_a.0shot.{name}"], name
