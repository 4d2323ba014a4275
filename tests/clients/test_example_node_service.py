"""examples/node-service against the real server: its HTTP routes create a session, remember, ask (a streamed
Generate underneath) and report state, map gRPC errors to HTTP statuses, and it stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deltamem.client import MemoryClient

SERVICE = Path(__file__).resolve().parent.parent.parent / "examples" / "node-service"


def call(base: str, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.fixture
def service(node, typescript_client, address):
    process = subprocess.Popen(
        [node, "server.mjs"],
        cwd=SERVICE,
        env={**os.environ, "DELTAMEM_TARGET": address, "HOST": "127.0.0.1", "PORT": "0"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
    if match is None:
        process.kill()
        pytest.fail(f"the service did not start: {line}{process.stderr.read()}")
    yield match.group(1), process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_node_service_remembers_and_answers(service, address):
    base, process = service
    status, created = call(base, "POST", "/sessions", {})
    assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", created["session_id"])
    session = created["session_id"]

    status, remembered = call(base, "POST", "/remember", {"session_id": session, "text": "The meeting is Thursday."})
    assert status == 200 and remembered["memory_version"] == 1 and remembered["tokens_written"] > 0

    status, answer = call(base, "POST", "/ask", {"session_id": session, "question": "When?", "max_new_tokens": 6})
    assert status == 200, answer
    assert answer["memory_version"] == 2 and answer["answer"] and 1 <= answer["deltas"] <= 6
    assert answer["finish_reason"] in ("END_OF_TURN", "LENGTH")

    status, state = call(base, "GET", f"/sessions/{session}")
    assert status == 200
    with MemoryClient(address, timeout=120) as client:
        read = client.read_state(session)
    assert read.session.metadata["via"] == "node-service"
    assert (state["memory_version"], state["checksum"]) == (read.session.memory_version, read.state.checksum)
    assert state["tokens_written"] == read.session.tokens_written

    # gRPC errors become HTTP statuses; the message is the server's
    assert call(base, "GET", "/sessions/" + "f" * 32) == (404, {"error": f"session {'f' * 32} does not exist"})
    status, bad = call(base, "POST", "/remember", {"session_id": "xyz", "text": "a"})
    assert status == 400 and "malformed" in bad["error"]
    assert call(base, "POST", "/remember", {"session_id": session})[0] == 400
    assert call(base, "GET", "/nowhere")[0] == 404

    process.terminate()
    assert process.wait(30) == 0
