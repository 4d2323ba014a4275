"""Token ids for training and evaluation, built with the backbone's chat template exactly as the server builds
them, so an adapter is trained and measured on the inputs it will be served."""

from __future__ import annotations

from collections.abc import Sequence

from deltamem.runtime.engine.chat_spans import chat_tokens_with_message_ids


def encode_chat(tokenizer, messages: Sequence[dict], add_generation_prompt: bool) -> tuple[list[int], list[int]]:
    """(ids, message id per token) of `messages` rendered by the chat template."""
    return chat_tokens_with_message_ids(tokenizer, list(messages), add_generation_prompt)


def end_of_turn_id(tokenizer) -> int:
    """The token that closes an assistant turn: the template's turn end (<|im_end|>) if it has one, else EOS."""
    token = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(token, int) and token != tokenizer.unk_token_id and token is not None:
        return token
    return tokenizer.eos_token_id


def question_prompt(tokenizer, question: str, context: Sequence[dict] = ()) -> list[int]:
    """The prompt that asks `question` as the user's next turn after the visible `context` messages."""
    ids, _ = encode_chat(tokenizer, [*context, {"role": "user", "content": question}], add_generation_prompt=True)
    return ids


def answer_ids(tokenizer, answer: str) -> list[int]:
    """The assistant's reply tokens as the template continues a generation prompt, closed by the turn end."""
    return [*tokenizer.encode(answer, add_special_tokens=False), end_of_turn_id(tokenizer)]


def window_messages(tokenizer, messages: Sequence[dict], window_tokens: int) -> list[dict]:
    """The last whole messages of `messages` whose text fits in `window_tokens` tokens (the window+state regime
    keeps recent turns as context; older ones only in memory)."""
    kept: list[dict] = []
    used = 0
    for message in reversed(messages):
        size = len(tokenizer.encode(message["content"], add_special_tokens=False))
        if used + size > window_tokens:
            break
        kept.insert(0, message)
        used += size
    while kept and kept[0]["role"] != "user":  # a chat context starts with the user
        kept.pop(0)
    return kept
