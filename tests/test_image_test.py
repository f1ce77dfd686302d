"""scripts/image_test.py (`make image-test`): the checks on the two runs' manifests."""

from __future__ import annotations

import pytest

from tests.helpers import load_script


@pytest.fixture(scope="module")
def image_test():
    return load_script("image_test")


def _manifest(files: dict, container: dict | None = None) -> dict:
    return {"files": files, "environment": {"container": container}}


def test_data_outputs_must_match_file_by_file(image_test):
    same = {f: _manifest({"a.parquet": {"sha256": "1", "bytes": 3}}) for f in image_test.DATA_OUTPUTS}
    assert image_test.data_problems(same, same) == []
    changed = {**same, "data/tokens": _manifest({"a.parquet": {"sha256": "2", "bytes": 3}})}
    assert image_test.data_problems(same, changed) == ["data/tokens/a.parquet: differs between host and image"]
    missing = {k: v for k, v in same.items() if k != "data/eval"}
    assert image_test.data_problems(same, missing) == ["data/eval: no manifest in the podman run"]


def test_every_manifest_must_name_the_image_and_its_lock(image_test, repo_root: Path, tmp_path: Path):
    from biomed_llama.fsutil import sha256_file
    from biomed_llama.provenance import write_manifest

    (tmp_path / "requirements").mkdir()
    (tmp_path / "requirements" / "cpu.lock").write_text("x==1\n")
    lock = sha256_file(tmp_path / "requirements" / "cpu.lock")
    (tmp_path / "data" / "tokens").mkdir(parents=True)
    write_manifest(tmp_path / "data" / "tokens", stage="t", params={})
    good = {"runtime": "podman", "image": "img", "labels": {"biomed.lock.sha256": lock}}
    assert image_test.image_problems(tmp_path, {"data/tokens": _manifest({}, good)}, "img") == []
    host = image_test.image_problems(tmp_path, {"data/tokens": _manifest({}, None)}, "img")
    assert host == ["data/tokens: manifest's container is None/None, not podman/img"]
    stale = {**good, "labels": {"biomed.lock.sha256": "0"}}
    assert "image label biomed.lock.sha256 0" in image_test.image_problems(tmp_path, {"data/tokens": _manifest({}, stale)}, "img")[0]
