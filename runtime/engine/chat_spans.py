"""Which chat message each token belongs to, for sequence-state (message_mean) writes.

The chat template is rendered for growing prefixes of the conversation; the tokens each new message adds form
its span. System messages and the generation prompt get -1 (never written); the other messages are numbered in
order. Tokens a template inserts on its own (a default system prompt, say) fall into the span of the message
whose rendering first produced them, as in the reference implementation.
"""

from __future__ import annotations

from collections.abc import Sequence

NOT_WRITTEN = -1


def _render(tokenizer, messages: Sequence[dict], add_generation_prompt: bool) -> list[int]:
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _common_prefix(a: list[int], b: list[int]) -> int:
    length = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        length += 1
    return length


def chat_tokens_with_message_ids(
    tokenizer, messages: Sequence[dict], add_generation_prompt: bool
) -> tuple[list[int], list[int]]:
    """Token ids of the rendered conversation and, per token, its message number (-1: not written)."""
    ids: list[int] = []
    owners: list[int] = []
    next_message = 0
    for index, message in enumerate(messages):
        rendered = _render(tokenizer, messages[: index + 1], add_generation_prompt=False)
        keep = _common_prefix(ids, rendered)
        owner = NOT_WRITTEN if message["role"] == "system" else next_message
        if owner != NOT_WRITTEN:
            next_message += 1
        # re-rendering may change the tail of the previous rendering: the new rendering wins
        ids, owners = rendered, owners[:keep] + [owner] * (len(rendered) - keep)
    if add_generation_prompt:
        rendered = _render(tokenizer, messages, add_generation_prompt=True)
        keep = _common_prefix(ids, rendered)
        ids, owners = rendered, owners[:keep] + [NOT_WRITTEN] * (len(rendered) - keep)
    return ids, owners
