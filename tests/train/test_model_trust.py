"""finetune.model: a model without a manifest is fine-tuned only with the recorded `finetune.model_external`
opt-in (its files then join the run fingerprint); without it, one IntegrityError line before any work."""

from __future__ import annotations

import pytest

from biomed_llama.train.finetune import FinetuneParams
from tests.helpers import train as H


def _start(tmp_path, manifest: bool):
    start = tmp_path / "start"
    start.mkdir()
    for name in ("config.json", "tokenizer_config.json"):
        (start / name).write_text("{}")
    if manifest:
        from biomed_llama.provenance import write_manifest

        write_manifest(start, stage="pretrain", params={})
    return start


def _params(tmp_path, start, **finetune):
    raw = H.tiny_params(tmp_path, tmp_path / "tokens")
    raw["finetune"] = {"model": str(start), **finetune}
    return FinetuneParams.of(H.validate(raw))


def test_a_model_without_manifest_is_refused_before_any_work(monkeypatch, tmp_path):
    from biomed_llama.errors import IntegrityError
    from biomed_llama.train.finetune import finetune_spec

    def no_work(*a, **k):
        raise AssertionError("the tokenizer was loaded before the model was checked")

    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", no_work)
    start = _start(tmp_path, manifest=False)
    with pytest.raises(IntegrityError) as e:
        finetune_spec(_params(tmp_path, start), "task", "medqa")
    assert e.value.exit_code == 3 and "\n" not in str(e.value)
    assert str(e.value) == (f"refusing model {start}: no manifest.json (a stage output whose manifest was removed, "
                            f"or a model made elsewhere); for an external base model set finetune.model_external: true")


@pytest.mark.parametrize("manifest", [False, True])
def test_the_opt_in_or_a_manifest_lets_it_through_and_is_recorded(monkeypatch, tmp_path, manifest):
    from biomed_llama.train.finetune import finetune_spec

    monkeypatch.setattr("biomed_llama.instruct.finetune_data.build_sft_dataset", lambda *a: _Tiny())
    monkeypatch.setattr("transformers.AutoTokenizer.from_pretrained", lambda *a, **k: None)
    start = _start(tmp_path, manifest)
    spec = finetune_spec(_params(tmp_path, start, model_external=not manifest), "task", "medqa")
    assert spec.verify == ([str(start)] if manifest else [])  # a manifest that is there is always checked
    assert spec.manifest_params["finetune"]["model_external"] is (not manifest)  # the opt-in is recorded
    assert str(start) in spec.inputs and len(spec.data_fingerprint["start_model"]) == 64


class _Tiny:
    """The few methods of an SFT dataset that `finetune_spec` calls."""

    def __len__(self):
        return 8

    def stats(self):
        return {"examples": 8}

    def fingerprint(self):
        return "f" * 64
