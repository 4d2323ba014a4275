"""The TypeScript client (built from clients/typescript) against the real server: tests/clients/typescript_live.mjs
does a streamed Generate, UpdateMemory, ForkSession and ReadState with its own assertions; here the Python
client checks that what the Node side saw is what the server holds."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from deltamem.client import MemoryClient, verify_checksum

SCRIPT = Path(__file__).resolve().parent / "typescript_live.mjs"


def test_typescript_client_streams_updates_forks_and_reads(node, typescript_client, address):
    run = subprocess.run([node, str(SCRIPT), address], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"the Node script failed:\n{run.stdout}\n{run.stderr}"
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["deltas"] >= 1 and summary["text"]

    with MemoryClient(address, timeout=120) as client:
        source = client.read_state(summary["session_id"])
        fork = client.read_state(summary["fork_id"])
    assert verify_checksum(source.state) and verify_checksum(fork.state)
    assert source.state.checksum == summary["source_checksum"]
    assert fork.state.checksum == summary["fork_checksum"] != summary["source_checksum"]
    assert (source.session.memory_version, fork.session.memory_version) == (2, 3)
    assert (summary["source_version"], summary["fork_version"]) == (2, 3)
    assert fork.session.parent_session_id == summary["session_id"] and fork.session.parent_memory_version == 2
    assert source.session.metadata["client"] == "typescript" and fork.session.metadata["branch"] == "ts"
