"""The benchmarks and GPU acceptance runs, a package run from the repository root: `python -m bench.<name>`
(`torchrun … -m bench.<name>` under torchrun); the bench/*.sh scripts do so. Shared helpers are imported as
`bench.<module>`, the package as `biomed_llama`, synthetic stage outputs from `biomed_llama.testing`."""
