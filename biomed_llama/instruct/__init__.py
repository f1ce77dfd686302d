"""Instruction data: source readers, templates, the mixture, and the fine-tuning datasets."""
