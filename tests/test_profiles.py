"""The two full-reproduction profiles: the released scripts (`configs/paper.yaml`) and the README's intent
(`configs/paper-intent.yaml`) differ exactly in the keys the README's table lists, each marked with its
source, and the released profile carries the corrections of REPRODUCTION.md."""

from __future__ import annotations

import re

import yaml

from biomed_llama.config import load_params


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
    intent_text = (repo_root / "configs/paper-intent.yaml").read_text()
    intent = yaml.safe_load(intent_text)
    listed = _readme_keys((repo_root / "README.md").read_text())
    # a key whose value is a mapping in one file and null in the other differs at the mapping's own level
    differing = {k.rsplit(".", 1)[0] if k.startswith("pretrain.released_loader.") else k for k in _differing(paper, intent)}
    assert differing == set(listed)
    for key in listed:  # the line that sets it in the intent profile says where the value comes from
        leaf = key.rsplit(".", 1)[-1]
        lines = [ln for ln in intent_text.splitlines() if re.match(rf"\s*{re.escape(leaf)}:", ln)]
        assert any("# INTENT:" in ln for ln in lines), key


def test_released_profile_carries_the_corrections(repo_root):
    p = load_params(repo_root / "configs/paper.yaml")
    i = load_params(repo_root / "configs/paper-intent.yaml")
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
