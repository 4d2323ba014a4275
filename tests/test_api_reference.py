"""docs/api-reference.md is generated from the proto comments: it must be current, and every element of the API
(service, RPC, message, field, oneof, enum, value) must carry a comment for it to render."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "docs" / "api-reference.md"
SERVICE = Path("deltamem") / "v1" / "memory_service.proto"


@pytest.fixture
def generator(load_script):
    return load_script("gen_api_reference")


def test_api_reference_is_not_stale(tmp_path, generator):
    fresh = generator.generate(tmp_path / "api-reference.md")
    assert COMMITTED.is_file(), "docs/api-reference.md is not committed: run `make proto`"
    assert COMMITTED.read_text() == fresh.read_text(), "docs/api-reference.md is stale: run `make proto`"


def test_every_element_is_documented_and_listed(generator):
    fds = generator.descriptor_set()
    assert generator.undocumented(fds) == []
    text = COMMITTED.read_text()
    (file,) = fds.file
    kinds = {}
    for element in generator.elements(file):
        kinds[element.kind] = kinds.get(element.kind, 0) + 1
        name = element.name.rsplit(".", 1)[-1]
        assert f"`{name}`" in text or f"### {name}" in text, f"{element.kind} {element.name} is not in the reference"
    # the walk itself reaches every kind of element (a walk that skipped fields would pass the loop above)
    assert kinds["service"] == 1 and kinds["rpc"] == 8 and kinds["enum"] == 3 and kinds["enum value"] == 12
    assert kinds["message"] == len([m for m in file.message_type if not m.options.map_entry])
    assert kinds["field"] == sum(len(m.field) for m in file.message_type)


def test_undocumented_elements_are_reported_and_refused(tmp_path, generator):
    copy = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", copy, ignore=shutil.ignore_patterns("released"))
    path = copy / SERVICE
    text = path.read_text()
    edits = {
        "  // What they say.\n": "  //\n",  # an empty comment documents nothing
        "  // Read-only generation: nothing is written and the memory version does not change.\n": "",
    }
    for old, new in edits.items():
        assert text.count(old) == 1, f"the edit no longer applies to the proto: {old!r}"
        text = text.replace(old, new)
    path.write_text(text)
    missing = generator.undocumented(generator.descriptor_set(copy))
    assert missing == ["field deltamem.v1.ChatMessage.content", "enum value deltamem.v1.WriteMode.WRITE_MODE_NONE"]
    with pytest.raises(SystemExit, match="ChatMessage.content"):
        generator.generate(tmp_path / "api-reference.md", copy)
    assert not (tmp_path / "api-reference.md").exists()
