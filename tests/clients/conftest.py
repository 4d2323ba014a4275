"""Fixtures for the Node.js side: `node` (the binary, 20 or newer) and `typescript_client` (clients/typescript
compiled from its current sources). Without node or without `npm ci` having run, the tests that need them skip
and say so; `make test` runs `make ts-client` first so that in CI they run."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
TS_PACKAGE = ROOT / "clients" / "typescript"
MIN_NODE_MAJOR = 20


@pytest.fixture(scope="session")
def node() -> str:
    binary = shutil.which("node")
    if binary is None:
        pytest.skip(f"node is not installed: the TypeScript client needs Node.js {MIN_NODE_MAJOR}+")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < MIN_NODE_MAJOR:
        pytest.skip(f"node {version} is too old: the TypeScript client needs Node.js {MIN_NODE_MAJOR}+")
    return binary


@pytest.fixture(scope="session")
def typescript_client(node) -> Path:
    """clients/typescript with dist/ freshly compiled by tsc, so a stale build is never what gets tested."""
    tsc = TS_PACKAGE / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        pytest.skip("clients/typescript/node_modules is missing: run `make ts-client` (npm ci needs the npm registry)")
    shutil.rmtree(TS_PACKAGE / "dist", ignore_errors=True)
    build = subprocess.run(
        [node, str(tsc), "-p", "tsconfig.json"], cwd=TS_PACKAGE, capture_output=True, text=True, timeout=300
    )
    assert build.returncode == 0, "tsc failed:\n" + build.stdout + build.stderr
    assert (TS_PACKAGE / "dist" / "index.js").is_file()
    return TS_PACKAGE
