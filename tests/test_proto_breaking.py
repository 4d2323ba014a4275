"""The proto stays compatible with the last released contract: `buf breaking` (FILE rules, from proto/buf.yaml)
of the working proto against the committed image proto/released/deltamem-v1-0.1.0.binpb, and proof that the
check catches a removed, renumbered or retyped field."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO = ROOT / "proto"
RELEASED = PROTO / "released" / "deltamem-v1-0.1.0.binpb"
SERVICE = Path("deltamem") / "v1" / "memory_service.proto"


def _buf() -> str:
    buf = shutil.which("buf", path=str(Path(sys.executable).parent)) or shutil.which("buf")
    if buf is None:
        pytest.skip("buf is not installed (pip install buf-bin)")
    return buf


def breaking(module: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [_buf(), "breaking", "--against", str(RELEASED)], cwd=module, capture_output=True, text=True, timeout=120
    )


def test_released_image_is_committed_and_holds_the_api():
    from google.protobuf import descriptor_pb2

    image = descriptor_pb2.FileDescriptorSet.FromString(RELEASED.read_bytes())
    files = {f.name: f for f in image.file}
    assert str(SERVICE) in files
    assert [s.name for s in files[str(SERVICE)].service] == ["MemoryService"]


def test_working_proto_has_no_breaking_change_against_the_release():
    result = breaking(PROTO)
    assert result.returncode == 0, "breaking change against 0.1.0:\n" + result.stdout + result.stderr


@pytest.mark.parametrize(
    "old,new,expected",
    [
        ("  // What they say.\n  string content = 2;\n", "", "content"),
        (
            "  string session_id = 1;\n  // The memory's version",
            "  string session_id = 11;\n  // The memory's version",
            'field "1" with name "session_id"',
        ),
        ("  uint64 tokens_written = 1;\n", "  uint32 tokens_written = 1;\n", "tokens_written"),
        ("  rpc ImportState(ImportStateRequest) returns (ImportStateResponse);\n", "", "ImportState"),
    ],
    ids=["removed-field", "renumbered-field", "retyped-field", "removed-rpc"],
)
def test_breaking_check_catches_a_breaking_edit(tmp_path, old, new, expected):
    copy = tmp_path / "proto"
    shutil.copytree(PROTO, copy, ignore=shutil.ignore_patterns("released"))
    path = copy / SERVICE
    text = path.read_text()
    assert text.count(old) == 1, f"the edit no longer applies to the proto: {old!r}"
    path.write_text(text.replace(old, new))
    result = breaking(copy)
    assert result.returncode != 0, "buf breaking accepted a breaking edit"
    assert expected in result.stdout, result.stdout + result.stderr
