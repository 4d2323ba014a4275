"""The proto contract: buf lint is clean, and the committed generated code is exactly what `make proto` makes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ROOT / "clients" / "python"


@pytest.fixture
def generator(load_script):
    return load_script("gen_proto")


def test_generated_code_is_not_stale(tmp_path, generator):
    written = generator.generate(tmp_path)
    assert written, "nothing was generated"
    for fresh in written:
        relative = fresh.relative_to(tmp_path)
        committed = GENERATED / relative
        assert committed.is_file(), f"{relative} is not committed: run `make proto`"
        assert committed.read_bytes() == fresh.read_bytes(), f"{relative} is stale: run `make proto`"
    committed_files = {p.relative_to(GENERATED) for p in (GENERATED / "deltamem" / "v1").iterdir() if p.is_file()}
    assert committed_files == {p.relative_to(tmp_path) for p in written}, "generated folder holds extra files"


def _buf() -> str:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        pytest.skip("buf is not installed (pip install buf-bin)")
    return buf


def test_buf_lint_is_clean_including_comments_on_every_element():
    result = subprocess.run([_buf(), "lint"], cwd=ROOT / "proto", capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    config = (ROOT / "proto" / "buf.yaml").read_text()
    assert "COMMENTS" in config and "STANDARD" in config


def test_buf_lint_catches_an_undocumented_field(tmp_path):
    """The lint is live: removing one comment makes it fail."""
    copy = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", copy)
    path = copy / "deltamem" / "v1" / "memory_service.proto"
    text = path.read_text()
    path.write_text(text.replace('  // Who speaks: "system", "user" or "assistant".\n', ""))
    result = subprocess.run([_buf(), "lint"], cwd=copy, capture_output=True, text=True)
    assert result.returncode != 0 and "role" in result.stdout + result.stderr
