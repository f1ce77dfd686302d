"""The repository's scripts; a package so that bench/ (`python -m bench.…`) imports the benchmark-file writer
`scripts.synth_benchmarks` without editing sys.path. Each script still runs as `python scripts/<name>.py`."""
