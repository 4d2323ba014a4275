"""An agent that forks its memory to try two ways of answering, then keeps the branch that answered better.

The agent writes what it knows into a session's memory. Before answering a question it forks that memory twice
and, on each fork, answers in a different way: "direct" asks the question alone; "with_notes" restates the
agent's notes in the prompt first. Every Generate writes its exchange into that fork's memory, so the two forks
now remember different attempts. Each answer is scored by one rule — 1 if it contains the expected fact, else 0;
on a tie the shorter answer (fewer generated tokens) wins, then the first branch — and the agent keeps the
winning fork, whose memory holds the good exchange, and deletes the other. The source session stays as the
checkpoint both were forked from.

    python examples/python/fork_branches.py [--target HOST:PORT] [--max-new-tokens N]

Progress goes to stderr; the last line on stdout is a JSON summary (tests/clients/test_example_fork_branches.py
reads it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from deltamem.client import MemoryClient

NOTES = "Facts about the house: the door code is 4711. The wifi password is tulip-42."
QUESTION = "What is the door code? Answer with the number."
EXPECTED = "4711"

# two ways of answering the same question; each runs on its own fork of the memory
BRANCHES = {
    "direct": [{"role": "user", "content": QUESTION}],
    "with_notes": [
        {"role": "system", "content": f"Your notes: {NOTES}"},
        {"role": "user", "content": QUESTION},
    ],
}


def score(answer: str) -> int:
    """The rule: an answer is good (1) when it states the expected fact, else 0."""
    return int(EXPECTED in answer)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(client: MemoryClient, max_new_tokens: int) -> dict:
    source = client.create_session({"agent": "fork_branches"})
    written = client.update_memory(source.session_id, NOTES)
    log(f"session {source.session_id}: {written.tokens_written} tokens of notes, version {written.memory_version}")

    attempts = []
    for name, prompt in BRANCHES.items():
        fork = client.fork_session(source.session_id, {"branch": name})
        stream = client.generate(fork.session_id, prompt, max_new_tokens=max_new_tokens)
        answer = "".join(delta.text for delta in stream)
        result = stream.result
        attempts.append(
            {
                "branch": name,
                "session_id": fork.session_id,
                "answer": answer,
                "score": score(answer),
                "generated_tokens": result.usage.generated_tokens,
                "memory_version": result.memory_version,
            }
        )
        log(f"branch {name} ({fork.session_id}): {answer!r} -> score {attempts[-1]['score']}")

    # highest score, then fewest generated tokens, then the first branch (sorted() is stable)
    ranked = sorted(attempts, key=lambda a: (-a["score"], a["generated_tokens"]))
    kept, dropped = ranked[0], ranked[1:]
    for attempt in dropped:
        client.delete_session(attempt["session_id"])
    state = client.read_state(kept["session_id"], summary_only=True)
    log(f"kept branch {kept['branch']} at memory version {state.session.memory_version}; deleted the other")
    return {
        "source_session_id": source.session_id,
        "kept": kept,
        "deleted": dropped,
        "kept_checksum": state.state.checksum,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=os.environ.get("DELTAMEM_TARGET", "127.0.0.1:50051"))
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    with MemoryClient(args.target, timeout=300) as client:
        print(json.dumps(run(client, args.max_new_tokens)))


if __name__ == "__main__":
    main()
