"""`biomed-hf-v03`: lm-eval's stock HF backend with lm-eval v0.3's context/continuation encoding.

lm-eval 0.4 encodes `context + continuation` in one call and splits the ids (moving trailing
spaces of the context into the continuation); v0.3 encoded the two strings separately. With a
SentencePiece tokenizer (LLaMA's) that matters: v0.3 scored PubMedQA's `Yes` as `▁Yes` (the
dummy prefix of a fresh encode), 0.4 as the `Yes` glued to `Answer:`. `eval.pair_encoding:
separate` selects this class; everything else is HFLM unchanged.

Stock-CLI equivalent (the import registers the model name):
`python -c "import biomed_llama.eval.v03_model as m; m.cli()" --model biomed-hf-v03 --model_args …`
"""

from __future__ import annotations

from lm_eval.api.registry import register_model
from lm_eval.models.huggingface import HFLM


@register_model("biomed-hf-v03")
class HFLMv03(HFLM):
    """HFLM whose (context, continuation) pair is encoded as v0.3 did: each string on its own."""

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """`(tok_encode(context), tok_encode(continuation))`, no re-splitting of a joint encoding."""
        return self.tok_encode(context), self.tok_encode(continuation)


def cli() -> None:
    """Run lm-eval's own CLI with `biomed-hf-v03` registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
