"""The original's prompt templates: items → `(input, output)` text pairs.

Two families, read from Coldog2333/BioMed-LLaMA (`evaluation/mcqa_dataset.py`):

- instruct (`render_instruct`): the instruction-tuned evaluation prompts, word for word: the MC
  instruction line, `### Question:`, `### Options:` with one `(A) …` line per option, and
  `### Answer:(`; PubMedQA's Yes / No / Maybe instruction with `### Abstract:`, `### Question:`,
  `### Answer:`. The released code does not include the script that built its mixture file
  (`sft.json` with `{source, input, output}`), so the outputs are chosen to continue these prompts
  the way the original scored them: MC → `B) Aspirin` (the prompt already ends with `(`; its
  evaluator compared `(B) Aspirin` after stripping `(`), PubMedQA → `Yes` / `No` / `Maybe` (its
  lm-eval fork scored exactly these strings right after `### Answer:`). Alpaca records use the
  Stanford Alpaca prompt; chain-of-thought and free-answer exemplars use the package's own
  wording (below), consistent in structure with the MC / PubMedQA prompts.
- task (`render_task`): the fine-tune rows' prompt, word for word: `### Context: …\n` (PubMedQA),
  `### Question: …\n`, `### Options: (A) x (B) y …\n`, `### Answer:`; target ` {answer}` (the
  gold option's text; PubMedQA's lower-case decision). EOS is appended by the tokenizing step.

One deliberate difference: the original's instruct MC template zipped options with `ABCD`, so a
5-option question lost its fifth option; here every option gets its letter.
"""

from __future__ import annotations

from biomed_llama.benchmarks.records import LETTERS, InstructionItem, Item, MCItem, OpenItem, YesNoItem

MC_INSTRUCTION = (
    "The following is a multiple-choice question (with options) about medical knowledge. "
    "Please select the most appropriate one from the following answer candidates as the final answer.\n\n"
)
PUBMEDQA_INSTRUCTION = (
    "The following is a medical question paired with an abstract from PubMed. "
    "Please answer Yes / No / Maybe to the question given the scientific evidence as the final answer.\n\n"
)
# The package's wording for free-answer exemplars (medpalm's consumer-health questions).
OPEN_INSTRUCTION = "The following is a medical question. Please answer it accurately and helpfully.\n\n"
# Chain of thought: the prompt stops at `### Answer:` (no `(`), the output reasons, then concludes.
COT_LEAD = " Let's think step by step. "
COT_CONCLUSION = " Therefore, the answer is "

ALPACA_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Response:\n"
)


def mc_prompt(item: MCItem, *, cot: bool = False) -> str:
    """The instruct MC prompt; ends with `### Answer:(` (or `### Answer:` for chain of thought)."""
    options = "\n".join(f"({LETTERS[i]}) {text}" for i, text in enumerate(item.options))
    end = "### Answer:" if cot else "### Answer:("
    return f"{MC_INSTRUCTION}### Question: {item.question}\n\n### Options:\n{options}\n\n{end}"


def pubmedqa_prompt(item: YesNoItem) -> str:
    """The instruct PubMedQA prompt; ends with `### Answer:`."""
    return f"{PUBMEDQA_INSTRUCTION}### Abstract: {item.context}\n\n### Question: {item.question}\n\n### Answer:"


def open_prompt(item: OpenItem) -> str:
    """The free-answer prompt (package wording); ends with `### Answer:`."""
    return f"{OPEN_INSTRUCTION}### Question: {item.question}\n\n### Answer:"


def alpaca_prompt(item: InstructionItem) -> str:
    """The Stanford Alpaca prompt, with or without the input block."""
    if item.input.strip():
        return ALPACA_WITH_INPUT.format(instruction=item.instruction, input=item.input)
    return ALPACA_NO_INPUT.format(instruction=item.instruction)


def render_instruct(item: Item, *, cot: bool = False) -> tuple[str, str]:
    """Return `(input, output)` of an item for the instruction mixture (EOS not included)."""
    if isinstance(item, InstructionItem):
        return alpaca_prompt(item), item.output
    if isinstance(item, MCItem):
        if cot:
            concl = f"({item.answer}) {item.answer_text}"
            return mc_prompt(item, cot=True), f"{COT_LEAD}{item.explanation}{COT_CONCLUSION}{concl}."
        return mc_prompt(item), f"{item.answer}) {item.answer_text}"
    if isinstance(item, YesNoItem):
        decision = item.answer.capitalize()
        if cot:
            return pubmedqa_prompt(item), f"{COT_LEAD}{item.explanation}{COT_CONCLUSION}{decision}."
        return pubmedqa_prompt(item), decision
    if cot and item.explanation:
        return open_prompt(item), f"{COT_LEAD}{item.explanation}{COT_CONCLUSION}{item.answer}"
    return open_prompt(item), f" {item.answer}"


def render_task(item: Item) -> tuple[str, str]:
    """Return `(input, output)` of a benchmark item in the fine-tune prompt (EOS not included)."""
    if isinstance(item, MCItem):
        options, answer, context = item.options, item.answer_text, None
    elif isinstance(item, YesNoItem):
        # The original showed PubMedQA's fixed options and trained on the lower-case decision.
        options, answer, context = ("yes", "no", "maybe"), item.answer, item.context
    else:
        raise TypeError(f"task fine-tuning needs a benchmark item, got {type(item).__name__}")
    source = f"### Context: {context}\n" if context else ""
    source += f"### Question: {item.question}\n"
    source += "### Options: " + " ".join(f"({LETTERS[i]}) {o}" for i, o in enumerate(options)) + "\n"
    return source + "### Answer:", f" {answer}"
