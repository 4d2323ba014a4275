"""Incremental detokenisation with stop sequences: turns a growing list of token ids into text deltas.

Decoding only a short window around the newest tokens keeps each step O(1); text that could still become a
stop sequence, or that ends in an incomplete multi-byte character, is held back until it is settled.
"""

from __future__ import annotations


class IncrementalDetokenizer:
    def __init__(self, tokenizer, stop: tuple[str, ...] = ()):
        self._tokenizer = tokenizer
        self._stop = tuple(stop)
        self._hold = max((len(s) for s in self._stop), default=1) - 1
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self.text = ""  # all settled text so far (stop sequence excluded)
        self._emitted = 0
        self.stopped = False

    def _decode(self, ids: list[int]) -> str:
        return self._tokenizer.decode(ids, skip_special_tokens=True)

    def add(self, token_id: int) -> str:
        """Feed one generated token; return the text that became final (possibly empty)."""
        self._ids.append(token_id)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self.text += full[len(prefix) :]
            self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        for stop in self._stop:
            index = self.text.find(stop)
            if index != -1:
                self.text = self.text[:index]
                self.stopped = True
        settled = len(self.text) if self.stopped else max(self._emitted, len(self.text) - self._hold)
        delta, self._emitted = self.text[self._emitted : settled], settled
        return delta

    def flush(self) -> str:
        """At the end of generation all held-back text is final."""
        delta, self._emitted = self.text[self._emitted :], len(self.text)
        return delta
