"""The published benchmarks (MedQA, MedMCQA, PubMedQA): item types, the bad-record policy and one set
of readers shared by instruct-mix, `finetune` task mode and prepare-eval."""
