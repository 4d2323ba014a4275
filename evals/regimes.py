"""The regimes of `deltamem eval`: what the model sees, in its prompt and in its memory, when asked a question.

  no_context     the question alone, empty memory
  state_only     the question alone, the history written into memory
  context_only   the history in the prompt, empty memory
  context_state  the history in the prompt and in memory (how the published gains were measured)
  window_only    the last turns within `window_tokens` in the prompt, empty memory
  window_state   the same window in the prompt, the whole history in memory
  state_other    a control: the question alone with a DIFFERENT conversation's history in memory. Where it scores
                 as well as state_only, the answers do not come from what memory holds.

Window regimes are scored only on questions whose evidence lies outside the window (what memory must supply).
The backbone's context length is respected explicitly: a history prompt that would not fit (with the answer)
keeps its last whole messages that do and the question is counted as `truncated`; a history is written into
memory in consecutive chunks of whole messages of at most `write_chunk_tokens` each, as successive UpdateMemory
calls would write it (each chunk its own forward, the state carried over).
"""

from __future__ import annotations

from deltamem.evals.conversation import session_numbers
from deltamem.evals.prompts import encode_chat, question_prompt, window_messages

REGIMES = ("no_context", "state_only", "context_only", "context_state", "window_only", "window_state", "state_other")
USES_STATE = frozenset({"state_only", "context_state", "window_state", "state_other"})
WINDOW_REGIMES = frozenset({"window_only", "window_state"})
# the regime with memory switched off that a state regime is compared with (and what it is with an empty memory)
WITHOUT_STATE = {
    "state_only": "no_context",
    "context_state": "context_only",
    "window_state": "window_only",
    "state_other": "no_context",
}


def parse_regimes(text: str) -> tuple[str, ...]:
    """'all' or a comma-separated list of regime names, in REGIMES order."""
    if text == "all":
        return REGIMES
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(chosen - set(REGIMES))
    if unknown or not chosen:
        raise ValueError(f"unknown regime(s) {unknown or [text]}; choose from {', '.join(REGIMES)} or 'all'")
    return tuple(r for r in REGIMES if r in chosen)


def context_messages(tokenizer, regime: str, history: list[dict], window_tokens: int) -> list[dict]:
    if regime in ("no_context", "state_only", "state_other"):
        return []
    if regime in ("context_only", "context_state"):
        return history
    return window_messages(tokenizer, history, window_tokens)


def fitted_prompt(tokenizer, context: list[dict], question: str, limit: int) -> tuple[list[int], bool]:
    """(prompt ids, truncated): the question after `context`, dropping its oldest messages while the prompt is
    longer than `limit` tokens."""
    prompt = question_prompt(tokenizer, question, context)
    if len(prompt) <= limit:
        return prompt, False
    low, high = 0, len(context)  # the fewest leading messages to drop: the prompt shrinks as more are dropped
    while low < high:
        middle = (low + high) // 2
        if len(question_prompt(tokenizer, question, _from_user(context[middle:]))) <= limit:
            high = middle
        else:
            low = middle + 1
    prompt = question_prompt(tokenizer, question, _from_user(context[low:]))
    if len(prompt) > limit:
        raise ValueError(f"the question alone takes {len(prompt)} tokens; the backbone takes at most {limit}")
    return prompt, True


def _from_user(messages: list[dict]) -> list[dict]:
    while messages and messages[0]["role"] != "user":  # a chat context starts with the user
        messages = messages[1:]
    return messages


def write_chunks(tokenizer, history: list[dict], chunk_tokens: int) -> list[tuple[list[int], list[int]]]:
    """The history as consecutive chat-encoded chunks of whole messages, each at most `chunk_tokens` tokens."""
    chunks, start = [], 0
    while start < len(history):
        end = start + 1
        encoded = encode_chat(tokenizer, history[start:end], add_generation_prompt=False)
        if len(encoded[0]) > chunk_tokens:
            raise ValueError(f"message {start} alone takes {len(encoded[0])} tokens, over the {chunk_tokens} per write")
        while end < len(history):
            longer = encode_chat(tokenizer, history[start : end + 1], add_generation_prompt=False)
            if len(longer[0]) > chunk_tokens:
                break
            end, encoded = end + 1, longer
        chunks.append(encoded)
        start = end
    return chunks


def evidence_outside_window(sample: dict, item: dict, history: list[dict], window: list[dict]) -> bool:
    """True when every evidence turn of `item` is older than the window's first message (known turns only)."""
    conversation = sample["conversation"]
    turn_ids = [t["dia_id"] for n in session_numbers(conversation) for t in conversation[f"session_{n}"]]
    found = [turn_ids.index(e) for e in item.get("evidence", []) if e in turn_ids]
    return bool(found) and max(found) < len(history) - len(window)
