"""How sampled tokens become the events a generation streams, and when a generation ends: one rule for every
engine, so that they stream the same text and stop at the same token."""

from __future__ import annotations

from deltamem.runtime.engine.detokenizer import IncrementalDetokenizer
from deltamem.runtime.engine.requests import GenerationOptions, TokenEvent


def end_of_turn_ids(generation_eos, tokenizer) -> frozenset[int]:
    """The tokens that end a turn: the generation config's EOS id(s) and the tokenizer's."""
    ids = set(
        generation_eos if isinstance(generation_eos, list) else [generation_eos] if generation_eos is not None else []
    )
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return frozenset(ids)


def token_events(
    detok: IncrementalDetokenizer, token: int, end_ids: frozenset[int], options: GenerationOptions, generated: int
) -> tuple[list[TokenEvent], str | None]:
    """(events, finish reason) for one sampled token, the `generated`-th: the reason is None while generation goes
    on. A stop sequence or the end of the turn ends it with the rest of the text in this token's event; reaching
    max_new_tokens ends it after this token, the detokenizer's held-back tail following as an event of its own."""
    text = detok.add(token)
    if detok.stopped:
        return [TokenEvent((token,), text + detok.flush())], "stop_sequence"
    if token in end_ids and not options.ignore_end_of_turn:
        return [TokenEvent((token,), text + detok.flush())], "end_of_turn"
    if generated >= options.max_new_tokens:
        tail = detok.flush()
        return [TokenEvent((token,), text), *([TokenEvent((), tail)] if tail else [])], "length"
    return [TokenEvent((token,), text)], None
