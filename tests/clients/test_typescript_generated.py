"""The committed TypeScript code in clients/typescript/src/gen is exactly what `make proto` generates."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
PACKAGE = ROOT / "clients" / "typescript"


@pytest.fixture
def generator(load_script):
    return load_script("gen_ts_client")


def test_generated_typescript_is_not_stale(tmp_path, generator):
    try:
        written = generator.generate(tmp_path)
    except generator.MissingTool as missing:
        pytest.skip(f"cannot regenerate the TypeScript code: {missing}")
    assert written, "nothing was generated"
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in written}
    committed_root = PACKAGE / generator.GENERATED
    committed = {p.relative_to(PACKAGE): p.read_bytes() for p in committed_root.rglob("*") if p.is_file()}
    assert set(committed) == set(fresh), "src/gen holds other files than `make proto` writes"
    for relative, content in fresh.items():
        assert committed[relative] == content, f"clients/typescript/{relative} is stale: run `make proto`"
    # the generated file carries the service: the descriptor connect's createClient needs
    (service_file,) = [content for relative, content in fresh.items() if relative.name == "memory_service_pb.ts"]
    assert b"export const MemoryService" in service_file
