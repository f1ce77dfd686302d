"""biomed-llama: a reproducibility package for BioMed-LLaMA (continued pretraining of LLaMA on PubMed)."""

__version__ = "0.1.0"
