"""Tokens to integer ids, and ragged texts to a padded (N, T) array with lengths.

Id 0 is `<pad>` (only ever after a sequence's end, which the RNN never reads) and id 1 is `<unk>` (a token
not in the vocabulary). The rest are the training tokens seen at least `min_freq` times, most frequent
first, at most `max_size` in all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
from jaxtyping import Int

PAD = "<pad>"
UNK = "<unk>"


class Vocabulary:
    """A fixed list of tokens; `ids[token]` is its row in the embedding matrix E (V, k)."""

    def __init__(self, tokens: Sequence[str]):
        if list(tokens[:2]) != [PAD, UNK]:
            raise ValueError(f"a vocabulary starts with {PAD!r}, {UNK!r}; got {list(tokens[:2])}")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"token {dup!r} appears twice in the vocabulary")
        self.tokens = list(tokens)
        self.ids = {t: i for i, t in enumerate(self.tokens)}

    @classmethod
    def build(
        cls, texts: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None
    ) -> Vocabulary:
        """The vocabulary of tokenized `texts`: tokens seen >= min_freq times, most frequent first."""
        if min_freq < 1:
            raise ValueError(f"min_freq must be >= 1; got {min_freq}")
        counts = Counter(t for text in texts for t in text)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        kept = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls([PAD, UNK, *kept])

    def extended(self, tokens: Iterable[str]) -> Vocabulary:
        """This vocabulary with `tokens` not yet in it appended, in order (ids already given keep theirs)."""
        new = [t for t in dict.fromkeys(tokens) if t not in self.ids]
        return Vocabulary([*self.tokens, *new])

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.ids

    def encode(self, tokens: Sequence[str]) -> list[int]:
        """Ids of `tokens`, `<unk>` (1) for those not in the vocabulary."""
        return [self.ids.get(t, 1) for t in tokens]

    def encode_batch(
        self, texts: Sequence[Sequence[str]], maxlen: int
    ) -> tuple[Int[np.ndarray, "N T"], Int[np.ndarray, " N"]]:
        """(ids (N, T=maxlen), lengths (N,)): each text cut to its first `maxlen` tokens and padded with 0.

        An empty text becomes a single `<unk>` (length 1): every sequence has at least one timestep.
        """
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1; got {maxlen}")
        ids = np.zeros((len(texts), maxlen), np.int32)
        lengths = np.ones(len(texts), np.int32)
        for i, text in enumerate(texts):
            row = self.encode(text[:maxlen]) or [1]
            ids[i, : len(row)] = row
            lengths[i] = len(row)
        return ids, lengths
