"""What a client feeds the model, and the one place it is tokenised and checked.

A `UserInput` is raw text, chat messages or token ids, as the client sent it. `InputEncoder.encode` turns it into
the tokens a call feeds (with, for message_mean adapters, the message each token belongs to) and refuses what
no engine can run: an empty input, an unknown role, a token outside the vocabulary, more tokens than the server
takes. Chat messages that continue a kept context are rendered as the chat template continues the conversation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from deltamem.runtime.engine.chat_spans import chat_tokens_with_message_ids
from deltamem.runtime.engine.requests import EncodedInput
from deltamem.runtime.errors import InvalidRequest

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class UserInput:
    """One of text, chat messages ((role, content) pairs) or token ids, unchecked."""

    text: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    token_ids: tuple[int, ...] | None = None


class KeptTokens(Protocol):
    """What a continuation needs of a kept context (sessions/kept_context.SessionContext is one)."""

    tokens: tuple[int, ...]
    messages: tuple[tuple[str, str], ...]
    total_tokens: int

    @property
    def start_position(self) -> int: ...


class InputEncoder:
    def __init__(self, tokenizer, vocab_size: int, max_input_tokens: int | None = None):
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.max_input_tokens = max_input_tokens  # None: no limit (in-process use); the server sets one

    def encode(self, given: UserInput, *, add_generation_prompt: bool, after: KeptTokens | None = None) -> EncodedInput:
        """The checked tokens of `given`. Chat messages get the generation prompt when asked (a Generate) and, with
        `after`, continue that context; raw text and token ids are fed as they are, as one message."""
        kinds = [kind for kind in ("text", "messages", "token_ids") if getattr(given, kind) is not None]
        if len(kinds) != 1:
            raise InvalidRequest("input is required: set exactly one of text, messages or token_ids")
        if given.text is not None:
            encoded = self.encode_text(given.text)
        elif given.token_ids is not None:
            encoded = self.encode_token_ids(given.token_ids)
        elif after is not None:
            encoded = self.continuation(after, given.messages)
        else:
            encoded = self.encode_messages(given.messages, add_generation_prompt)
        if self.max_input_tokens is not None and len(encoded.ids) > self.max_input_tokens:
            raise InvalidRequest(
                f"the input has {len(encoded.ids)} tokens; this server takes at most {self.max_input_tokens}"
            )
        return encoded

    def encode_text(self, text: str) -> EncodedInput:
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return EncodedInput(tuple(ids), (0,) * len(ids))

    def encode_token_ids(self, ids: Sequence[int]) -> EncodedInput:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InvalidRequest(f"token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        return EncodedInput(tuple(ids), (0,) * len(ids))

    def encode_messages(self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool) -> EncodedInput:
        check_chat(messages)
        ids, owners = chat_tokens_with_message_ids(self.tokenizer, as_chat(messages), add_generation_prompt)
        return EncodedInput(tuple(ids), tuple(owners))

    def continuation(self, context: KeptTokens, messages: Sequence[tuple[str, str]]) -> EncodedInput:
        """The tokens that continue `context` with new chat `messages` (plus the generation prompt), as the chat
        template renders the whole conversation. When the kept tokens are exactly the template's rendering so far,
        the continuation starts right after them; otherwise (an output cut by a stop sequence, say) it starts
        where the template's rendering of the earlier turns ends."""
        check_chat(messages)
        history = list(context.messages)
        ids, owners = chat_tokens_with_message_ids(
            self.tokenizer, as_chat([*history, *messages]), add_generation_prompt=True
        )
        cut = 0
        start, end = context.start_position, context.total_tokens
        if tuple(ids[start:end]) == context.tokens:
            cut = end
        elif history:
            cut = len(chat_tokens_with_message_ids(self.tokenizer, as_chat(history), add_generation_prompt=False)[0])
        return EncodedInput(tuple(ids[cut:]), tuple(owners[cut:]))


def check_chat(messages: Sequence[tuple[str, str]]) -> None:
    if not messages:
        raise InvalidRequest("the input has no chat messages")
    for index, (role, _content) in enumerate(messages):
        if role not in ROLES:
            raise InvalidRequest(f"messages[{index}].role must be system, user or assistant, got {role!r}")


def as_chat(messages: Sequence[tuple[str, str]]) -> list[dict]:
    return [{"role": role, "content": content} for role, content in messages]
