"""Fine-tune rows: the exact-match scorer accepts the trained target and rejects anything else."""

from __future__ import annotations

from biomed_llama.eval.task_utils import finetune_process_results, finetune_target, finetune_text

MC = {"question": "Which drug lowers serum urate?", "options": ["Aspirin", "Allopurinol", "Heparin", "Insulin"],
      "label": 1, "context": ""}
YN = {"question": "Does drug X reduce mortality?", "options": ["Yes", "No", "Maybe"], "label": 2,
      "context": "Background. Methods. Results."}


def test_prompt_ends_where_generation_starts() -> None:
    text = finetune_text(MC)
    assert "### Question: Which drug lowers serum urate?" in text
    assert "(B) Allopurinol" in text
    assert text.rstrip().endswith("### Answer:")
    assert "### Context: Background. Methods. Results." in finetune_text(YN)


def test_gold_generation_scores_one_and_others_zero() -> None:
    gold = finetune_target(MC)
    assert gold == "Allopurinol"
    assert finetune_process_results(MC, [" Allopurinol</s>"]) == {"exact_match": 1.0}
    assert finetune_process_results(MC, [" allopurinol "]) == {"exact_match": 1.0}
    assert finetune_process_results(MC, [" Aspirin"]) == {"exact_match": 0.0}
    assert finetune_process_results(MC, [" Allopurinol is the answer"]) == {"exact_match": 0.0}
    assert finetune_target(YN) == "maybe"
    assert finetune_process_results(YN, [" Maybe</s>"]) == {"exact_match": 1.0}
    assert finetune_process_results(YN, [" Yes"]) == {"exact_match": 0.0}
