"""The full-reproduction profiles: the released scripts (`configs/paper.yaml`, the one source of the paper's
values) and the README's intent (`configs/overlays/intent.yaml` over it) differ exactly in the keys the
README's table lists, each marked with its source; the released profile carries the corrections of
REPRODUCTION.md. Composition itself (`biomed-llama compose`): merge rules, `!delete`, the header, errors."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

import pytest

from biomed_llama.config import load_params
from biomed_llama.errors import ConfigError
from biomed_llama.profiles import compose, composed_sources, load_profile, merge, write_composed
from tests.helpers import PROFILES, REPO, load_named_profile


def _flat(obj, prefix: str = "") -> dict[str, object]:
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _differing(a: dict, b: dict) -> set[str]:
    fa, fb = _flat(a), _flat(b)
    return {k for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>")}


def _readme_keys(readme: str) -> list[str]:
    block = readme.split("<!-- profile-differences:begin -->")[1].split("<!-- profile-differences:end -->")[0]
    rows = [ln for ln in block.strip().splitlines()[2:] if ln.startswith("|")]
    return [re.match(r"\| `([^`]+)` \|", ln).group(1) for ln in rows]


def test_profiles_differ_in_the_readme_table_keys_each_with_its_source(repo_root):
    paper = yaml.safe_load((repo_root / "configs/paper.yaml").read_text())
    intent_text = (repo_root / "configs/overlays/intent.yaml").read_text()
    intent = compose([repo_root / layer for layer in PROFILES["paper-intent"]])
    listed = _readme_keys((repo_root / "README.md").read_text())
    # a key whose value is a mapping in one file and null in the other differs at the mapping's own level
    differing = {k.rsplit(".", 1)[0] if k.startswith("pretrain.released_loader.") else k for k in _differing(paper, intent)}
    assert differing == set(listed)
    for key in listed:  # the line that sets it in the intent profile says where the value comes from
        leaf = key.rsplit(".", 1)[-1]
        lines = [ln for ln in intent_text.splitlines() if re.match(rf"\s*{re.escape(leaf)}:", ln)]
        assert any("# INTENT:" in ln for ln in lines), key


def test_released_profile_carries_the_corrections(repo_root):
    p = load_named_profile("paper")
    i = load_named_profile("paper-intent")
    assert p.profile == "paper" and i.profile == "paper-intent"
    assert p.pretrain.optim.lr == 1e-5 and i.pretrain.optim.lr == 3e-5
    rl = p.pretrain.released_loader
    assert (rl.workers, rl.world_size, rl.micro_batch) == (16, 32, 1) and i.pretrain.released_loader is None
    for q in (p, i):
        assert q.pretrain.packing == "truncate" and q.pretrain.shuffle is False
        assert q.pretrain.global_batch_size == 2048
        assert q.finetune.tokenization == "joint"
        assert q.instruct_mix.allocation == "released" and len(q.instruct_mix.sources) == 20
        assert q.instruct_mix.n_records == 150_000
        assert q.finetune.base is not None and q.finetune.base.model == q.eval.models["llama-7b"].path
        assert len(q.finetune.tasks["medqa"].seeds) >= 2  # the USMLE fine-tune cells are a mean ± spread
        rows = {m.paper_row for m in q.eval.models.values()}
        assert {"GPT-Neo (2.7B)", "BioMedLM (2.7B)", "PMC-LLaMA-7B", "LLaMA-7B", "BioMed-LLaMA-7B"} <= rows
        suites = {(m.paper_row, s) for m in q.eval.models.values() for s in m.suites}
        assert {("LLaMA-7B", "instruct"), ("LLaMA-7B", "finetune"), ("BioMed-LLaMA-7B", "finetune")} <= suites


def test_demo_trains_and_evaluates_the_llama_rows(repo_root):
    d = load_params(repo_root / "params.yaml")
    assert d.finetune.base is not None and d.finetune.base.model == d.eval.models["base"].path
    ft = {m.path for m in d.eval.models.values() if m.paper_row == "LLaMA-7B" and "finetune" in m.suites}
    assert ft == {f"{d.finetune.base.task_output_prefix}{t}" for t in d.finetune.tasks}
    assert d.eval.models["base-instruct"].path == d.finetune.base.instruct_output
    assert len(d.finetune.tasks["medqa"].seeds) >= 2 and d.eval.random_baseline


# ---- composition ----

def test_merge_rules_mappings_merge_lists_and_scalars_replace_null_replaces():
    base = {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 2}
    over = {"a": {"y": [3], "z": None}, "c": 3}
    assert merge(base, over) == {"a": {"x": 1, "y": [3], "z": None}, "b": 2, "c": 3}
    assert base == {"a": {"x": 1, "y": [1, 2], "z": {"k": 1}}, "b": 2}  # inputs untouched


def test_delete_tag_removes_a_key_and_refuses_an_absent_one(tmp_path):
    (tmp_path / "base.yaml").write_text("a: {x: 1, y: 2}\n")
    (tmp_path / "del.yaml").write_text("a:\n  y: !delete\n")
    (tmp_path / "typo.yaml").write_text("a:\n  w: !delete\n")
    assert compose([tmp_path / "base.yaml", tmp_path / "del.yaml"]) == {"a": {"x": 1}}
    with pytest.raises(ConfigError, match=r"typo.yaml: a.w: !delete of a key"):
        compose([tmp_path / "base.yaml", tmp_path / "typo.yaml"])


def test_an_overlay_with_an_unknown_key_is_one_config_error_naming_it(repo_root, tmp_path):
    (tmp_path / "bad.yaml").write_text("pretrain: {optim: {lrr: 1.0}}\n")
    with pytest.raises(ConfigError, match=r"pretrain.optim.lrr: unknown key"):
        load_profile([repo_root / "configs/paper.yaml", tmp_path / "bad.yaml"])
    with pytest.raises(ConfigError, match="not found"):
        compose([tmp_path / "absent.yaml"])


@pytest.mark.parametrize("overlay", sorted(p.name for p in (REPO / "configs/overlays").glob("*.yaml")))
def test_every_overlay_composes_over_the_paper_profile(repo_root, overlay):
    params = load_profile([repo_root / "configs/paper.yaml", repo_root / "configs/overlays" / overlay])
    assert params.profile != "paper"  # an overlay names what it makes, so manifests and the table tell them apart


def test_the_composed_file_names_its_sources_and_loads_as_the_composition(repo_root, tmp_path):
    layers = [repo_root / layer for layer in PROFILES["paper-intent"]]
    out = tmp_path / "params.yaml"
    write_composed(layers, out)
    text = out.read_text()
    assert composed_sources(text) == [str(p) for p in layers]
    assert "sha256:" in text.splitlines()[2]
    assert load_params(out) == load_profile(layers) == load_named_profile("paper-intent")


def test_compose_cli_writes_params_and_refuses_a_bad_layer_with_exit_2(repo_root, tmp_path):
    import subprocess
    import sys

    def run(*layers: str, out: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "biomed_llama", "compose", *layers, "--out", str(out)]
        return subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)

    ok = run(str(repo_root / "configs/paper.yaml"), str(repo_root / "configs/overlays/intent.yaml"),
             out=tmp_path / "params.yaml")
    assert ok.returncode == 0, ok.stderr
    assert load_params(tmp_path / "params.yaml").profile == "paper-intent"
    (tmp_path / "bad.yaml").write_text("nonsense: 1\n")
    bad = run(str(repo_root / "configs/paper.yaml"), str(tmp_path / "bad.yaml"), out=tmp_path / "other.yaml")
    assert bad.returncode == 2 and not (tmp_path / "other.yaml").exists()
    assert bad.stderr.strip().splitlines() == [f"error: {repo_root / 'configs/paper.yaml'} + {tmp_path / 'bad.yaml'}: nonsense: unknown key"]
