"""`biomed-llama pretrain`: continued pretraining on the tokenized PubMed stream.

The stage is a `TrainSpec` for the engine (`biomed_llama.train.engine`): the packed token stream of
`pretrain.tokens`, from a random init or `model.base`. The stream joins the run fingerprint by its
content (the tokenize manifest's file hashes) and how it is cut, so new tokens at the same path
train fresh in a run folder of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from biomed_llama.model.config import ModelConfig
from biomed_llama.train.config import PretrainConfig
from biomed_llama.train.engine import TrainResult, TrainSpec, run_training
from biomed_llama.train.runs import manifest_files_id, spec_fingerprint


@dataclass(frozen=True)
class PretrainParams:
    """What the pretrain stage reads: its own section, the model's, the master seed and the profile name.

    The CLI passes these, never the whole params: the stage's code depends on no other section's (dvc.yaml).
    """

    pretrain: PretrainConfig
    model: ModelConfig
    seed: int
    profile: str

    @classmethod
    def of(cls, params: Any) -> PretrainParams:
        """Pick the stage's sections out of a loaded params object (`biomed_llama.config.Params`)."""
        return cls(params.pretrain, params.model, params.seed, params.profile)


def stream_fingerprint(cfg: PretrainConfig) -> dict[str, Any]:
    """The packed token stream's identity: its content (the tokenize manifest's file hashes) and how it is cut.

    The `tokens` path itself is left out: moving the folder does not change the run, new content does.
    """
    return {
        "tokens_files": manifest_files_id(cfg.tokens),
        "subsets": list(cfg.subsets),
        "split": cfg.split,
        "packing": cfg.packing,
    }


def run_fingerprint(params: PretrainParams, total_steps: int) -> str:
    """Hash of everything that determines the trained numbers (seed, model, data, optimisation, steps)."""
    return spec_fingerprint(
        params.seed, params.model, params.pretrain, total_steps, stream_fingerprint(params.pretrain)
    )


def pretrain_spec(params: PretrainParams) -> TrainSpec:
    """The pretrain stage: the packed PubMed token stream, from a random init or `model.base`."""
    from biomed_llama.errors import UserError

    cfg, mcfg = params.pretrain, params.model

    def dataset():
        from biomed_llama.data.loader import PackedDataset, open_stores

        if not (Path(cfg.tokenizer) / "tokenizer_config.json").is_file():
            raise UserError(
                f"pretrain.tokenizer={cfg.tokenizer}: not a HF tokenizer directory (no tokenizer_config.json)"
            )
        stores = open_stores(cfg.tokens, cfg.subsets, cfg.split)
        return (
            PackedDataset(stores, cfg.max_seq_length, cfg.packing, document_order=cfg.document_order, seed=params.seed),
            int(stores[0].meta["vocab_size"]),
        )

    base_checked = []
    if mcfg.base:
        from biomed_llama.provenance import require_trusted_model

        # a stage's output is verified against its manifest; a downloaded base only with the opt-in (its files are
        # hashed into the export's manifest as an input)
        if require_trusted_model(mcfg.base, external=mcfg.base_external, opt_in="model.base_external"):
            base_checked = [mcfg.base]
    return TrainSpec(
        stage="pretrain",
        seed=params.seed,
        cfg=cfg,
        model=mcfg,
        dataset=dataset,
        verify=[cfg.tokens] + base_checked,
        inputs=[cfg.tokens] + ([mcfg.base] if mcfg.base else []),
        manifest_params={
            "seed": params.seed,
            "profile": params.profile,
            "model": mcfg.section_dict(),
            "pretrain": cfg.section_dict(),
        },
        data_fingerprint=stream_fingerprint(cfg),
    )


def run_pretrain(params: PretrainParams) -> TrainResult | None:
    """Run (or resume) pretraining as `params` say; export the HF model and write metrics on rank 0."""
    return run_training(pretrain_spec(params))
