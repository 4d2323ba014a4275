"""The `deltamem` command line against the real server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deltamem.client import MemoryClient


def deltamem(address: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run the installed `deltamem` console script."""
    return subprocess.run(
        [str(Path(sys.executable).parent / "deltamem"), "--target", address, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_create_update_chat_fork_state(address):
    created = deltamem(address, "create", "--meta", "owner=cli")
    assert created.returncode == 0, created.stderr
    session = json.loads(created.stdout)
    assert session["metadata"] == {"owner": "cli"}
    sid = session["session_id"]

    updated = deltamem(address, "update", sid, stdin="The meeting moved to Thursday.")
    assert updated.returncode == 0, updated.stderr
    assert json.loads(updated.stdout)["memory_version"] == "1"

    chat = deltamem(address, "chat", "--session", sid, "-m", "When is the meeting?", "--max-new-tokens", "8")
    assert chat.returncode == 0, chat.stderr
    assert chat.stdout.strip() and "memory version 2" in chat.stderr

    fork = json.loads(deltamem(address, "fork", sid).stdout)
    assert fork["parent_session_id"] == sid

    state = json.loads(deltamem(address, "state", fork["session_id"]).stdout)
    assert state["state"]["shape"] == [30, 1, 8, 8] and "values" not in state["state"]["layers"][0]
    full = json.loads(deltamem(address, "state", fork["session_id"], "--full").stdout)
    assert len(full["state"]["layers"][0]["values"]) == 64
    with MemoryClient(address) as client:
        assert client.read_state(sid).state.checksum == full["state"]["checksum"]

    listed = deltamem(address, "list")
    assert sid in listed.stdout and fork["session_id"] in listed.stdout
    assert deltamem(address, "delete", fork["session_id"]).returncode == 0


def test_errors_are_reported_with_status_and_exit_code(address):
    missing = deltamem(address, "state", "0" * 32)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr and "does not exist" in missing.stderr
    malformed = deltamem(address, "fork", "xyz")
    assert malformed.returncode == 1 and "INVALID_ARGUMENT" in malformed.stderr


def test_serve_subcommand_reaches_the_server_entry_point():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "deltamem"), "serve", "--prepare-only"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "default model ready" in result.stderr
