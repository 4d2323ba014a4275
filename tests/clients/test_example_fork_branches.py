"""examples/python/fork_branches.py against the real server: it keeps the better branch by its own rule and
deletes the other, and the server agrees about what is left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from deltamem.client import MemoryClient

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "examples" / "python" / "fork_branches.py"


def test_fork_branches_keeps_the_better_branch(address):
    run = subprocess.run(
        [sys.executable, str(EXAMPLE), "--target", address, "--max-new-tokens", "16"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    kept, (deleted,) = summary["kept"], summary["deleted"]
    assert {kept["branch"], deleted["branch"]} == {"direct", "with_notes"}
    for attempt in (kept, deleted):
        assert attempt["score"] == int("4711" in attempt["answer"])
        assert 1 <= attempt["generated_tokens"] <= 16 and attempt["memory_version"] == 2
    # the notes are in the with_notes prompt, so that branch finds the fact; the rule then keeps a scoring branch
    notes = kept if kept["branch"] == "with_notes" else deleted
    assert notes["score"] == 1 and kept["score"] == 1
    assert (kept["score"], -kept["generated_tokens"]) >= (deleted["score"], -deleted["generated_tokens"])

    with MemoryClient(address, timeout=120) as client:
        source = client.read_state(summary["source_session_id"])
        branch = client.read_state(kept["session_id"])
        assert branch.session.parent_session_id == summary["source_session_id"]
        assert branch.session.metadata["branch"] == kept["branch"]
        assert (source.session.memory_version, branch.session.memory_version) == (1, 2)
        assert branch.state.checksum == summary["kept_checksum"] != source.state.checksum
        with pytest.raises(grpc.RpcError) as gone:
            client.read_state(deleted["session_id"])
        assert gone.value.code() == grpc.StatusCode.NOT_FOUND
