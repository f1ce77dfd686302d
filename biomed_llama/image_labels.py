"""Write an image's labels into a JSON file at build time (`python -m biomed_llama.image_labels OUT K=V …`).

OCI labels live in the image's config, which a process inside a podman or Docker container cannot
read; the recipes (containers/Dockerfile, singularity/biomed.def) therefore also bake them into
/opt/biomed/labels.json, where `provenance.container_identity` finds them.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

# Where the recipes put the file (inside the image).
LABELS_FILE = Path("/opt/biomed/labels.json")


def parse_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """`["a=1", "b=x=y"]` → `{"a": "1", "b": "x=y"}`; a pair without `=` is a ValueError naming it."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"label {pair!r}: expected KEY=VALUE")
        out[key] = value
    return out


def main(argv: Sequence[str] | None = None) -> None:
    """Write the KEY=VALUE labels given after the output path as a sorted JSON object."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 2:
        sys.exit("usage: python -m biomed_llama.image_labels OUT.json KEY=VALUE...")
    out = Path(args[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(parse_pairs(args[1:]), indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
