"""Data stages: Pile extraction, tokenization, packing and the resumable training loader."""
