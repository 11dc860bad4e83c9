"""Elman (1990), "Finding Structure in Time": the paper's three prediction tasks, generated here.

Each task is one long stream s_0, s_1, ..., s_T; the input at step t is s_t and the target is s_{t+1},
so a model predicts the next element with y_t at every step (many-to-many).

    elman:xor        random bit pairs, each followed by their XOR: 1 0 1 0 0 0 1 1 0 ...   k = 1
    elman:letters    random consonants b, d, g expanded to ba, dii, guuu, each letter as the paper's
                     6 phonetic features (Consonant Vowel Interrupted High Back Voiced)       k = 6
    elman:sentences  10,000 two- and three-word sentences from 16 templates over 12 categories of
                     29 words, concatenated without breaks, one word per step, one-hot         k = 29

`load(name, seed=0)` gives an `ElmanData`; `next_word_distribution(data)` gives, for the sentences, what
the best possible predictor would say at every step (the generator's own probabilities, given the past).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Float, Int

__all__ = [
    "CATEGORIES",
    "LETTERS",
    "LETTER_FEATURES",
    "NAMES",
    "NOUN_CATEGORIES",
    "SYLLABLES",
    "TEMPLATES",
    "VERB_CATEGORIES",
    "ElmanData",
    "belief_states",
    "letters",
    "load",
    "matches_template",
    "next_word_distribution",
    "sentences",
    "xor",
]

NAMES = ("xor", "letters", "sentences")

# Table 1 of the paper: the six phonetic features of each letter.
LETTER_FEATURES = ("consonant", "vowel", "interrupted", "high", "back", "voiced")
LETTERS: dict[str, tuple[int, ...]] = {
    "b": (1, 0, 1, 0, 0, 1),
    "d": (1, 0, 1, 1, 0, 1),
    "g": (1, 0, 1, 0, 1, 1),
    "a": (0, 1, 0, 0, 1, 1),
    "i": (0, 1, 0, 1, 0, 1),
    "u": (0, 1, 0, 1, 1, 1),
}
SYLLABLES = {"b": "ba", "d": "dii", "g": "guuu"}

# Table 3 of the paper (categories) with the 29 words of its Figure 7. A word may sit in two categories
# ("see" is TRAN and PERCEPT, "break" AGPAT and DESTROY), as in the paper.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "HUM": ("man", "woman", "boy", "girl"),
    "ANIM": ("cat", "mouse", "dog"),
    "INANIM": ("book", "rock", "car"),
    "AGRESS": ("dragon", "monster", "lion"),
    "FRAG": ("glass", "plate"),
    "FOOD": ("cookie", "bread", "sandwich"),
    "INTRAN": ("think", "sleep", "exist"),
    "TRAN": ("see", "chase", "like"),
    "AGPAT": ("move", "break"),
    "PERCEPT": ("smell", "see"),
    "DESTROY": ("break", "smash"),
    "EAT": ("eat",),
}
NOUN_CATEGORIES = ("HUM", "ANIM", "INANIM", "AGRESS", "FRAG", "FOOD")
VERB_CATEGORIES = ("INTRAN", "TRAN", "AGPAT", "PERCEPT", "DESTROY", "EAT")

# Table 4 of the paper: the sentence generator's 16 templates.
TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("HUM", "EAT", "FOOD"),
    ("HUM", "PERCEPT", "INANIM"),
    ("HUM", "DESTROY", "FRAG"),
    ("HUM", "INTRAN"),
    ("HUM", "TRAN", "HUM"),
    ("HUM", "AGPAT", "INANIM"),
    ("HUM", "AGPAT"),
    ("ANIM", "EAT", "FOOD"),
    ("ANIM", "TRAN", "ANIM"),
    ("ANIM", "AGPAT", "INANIM"),
    ("ANIM", "AGPAT"),
    ("INANIM", "AGPAT"),
    ("AGRESS", "DESTROY", "FRAG"),
    ("AGRESS", "EAT", "HUM"),
    ("AGRESS", "EAT", "ANIM"),
    ("AGRESS", "EAT", "FOOD"),
)

WORDS: tuple[str, ...] = tuple(dict.fromkeys(w for c in NOUN_CATEGORIES + VERB_CATEGORIES for w in CATEGORIES[c]))
NOUNS: frozenset[str] = frozenset(w for c in NOUN_CATEGORIES for w in CATEGORIES[c])
VERBS: frozenset[str] = frozenset(w for c in VERB_CATEGORIES for w in CATEGORIES[c])


@dataclass(frozen=True)
class ElmanData:
    """One of the paper's streams, ready for a many-to-many model (one sequence, B = 1).

    inputs:   (1, T, k) float32, x_t = the encoding of stream element t
    targets:  (1, T, q) float32, the encoding of element t+1: what y_t should predict
    labels:   (1, T) int32, the id of element t+1 in `vocab` (for a softmax readout and for analysis)
    tokens:   (T + 1,) the stream's symbols ("0"/"1", letters, words); inputs are tokens[:-1]
    position: (T,) where target t+1 sits within its triple / syllable / sentence (0 = first)
    vocab:    the symbols, in the order of `labels` (and of the one-hot axis for sentences)
    features: names of the k input features
    output:   "sigmoid" when y_t is q independent bits (xor, letters), "softmax" when it is one word
    segments: the stream cut into its triples / syllables / sentences, as generated
    categories: for the sentences, each word's categories; empty otherwise
    """

    name: str
    inputs: Float[np.ndarray, "1 T k"]
    targets: Float[np.ndarray, "1 T q"]
    labels: Int[np.ndarray, "1 T"]
    tokens: tuple[str, ...]
    position: Int[np.ndarray, " T"]
    vocab: tuple[str, ...]
    features: tuple[str, ...]
    output: str
    segments: tuple[tuple[str, ...], ...]
    seed: int
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def T(self) -> int:
        """Timesteps: the number of (input, next-element) pairs."""
        return self.inputs.shape[1]

    @property
    def k(self) -> int:
        """Features per input x_t."""
        return self.inputs.shape[2]

    @property
    def q(self) -> int:
        """Outputs per prediction y_t."""
        return self.targets.shape[2]


def _stream(
    name: str,
    tokens: list[str],
    encode: dict[str, np.ndarray],
    vocab: tuple[str, ...],
    position: list[int],
    features: tuple[str, ...],
    output: str,
    segments: list[tuple[str, ...]],
    seed: int,
    categories=None,
) -> ElmanData:
    x = np.stack([encode[s] for s in tokens]).astype(np.float32)
    ids = {s: i for i, s in enumerate(vocab)}
    labels = np.array([ids[s] for s in tokens[1:]], np.int32)
    return ElmanData(
        name=f"elman:{name}",
        inputs=x[None, :-1],
        targets=x[None, 1:],
        labels=labels[None],
        tokens=tuple(tokens),
        position=np.asarray(position[1:], np.int32),
        vocab=vocab,
        features=features,
        output=output,
        segments=tuple(segments),
        seed=seed,
        categories=dict(categories or {}),
    )


def xor(triples: int = 1000, *, seed: int = 0) -> ElmanData:
    """Temporal XOR: `triples` times two random bits b1 b2 then b1 XOR b2 (the paper: 3000 bits).

    Only every third bit is predictable; the others are coin flips.
    """
    if triples < 2:
        raise ValueError(f"elman:xor needs at least 2 triples; got {triples}")
    rng = np.random.default_rng(seed)
    pairs = rng.integers(0, 2, size=(triples, 2))
    bits = np.concatenate([pairs, pairs[:, :1] ^ pairs[:, 1:]], axis=1)
    tokens = [str(b) for b in bits.reshape(-1)]
    encode = {"0": np.array([0.0]), "1": np.array([1.0])}
    segments = [tuple(str(b) for b in row) for row in bits]
    return _stream(
        "xor",
        tokens,
        encode,
        ("0", "1"),
        [i % 3 for i in range(len(tokens))],
        ("bit",),
        "sigmoid",
        segments,
        seed,
    )


def letters(consonants: int = 1000, *, seed: int = 0) -> ElmanData:
    """Letter sequences: `consonants` random draws of b, d, g, each expanded to ba, dii or guuu.

    Which consonant comes next is a coin toss; the vowels after it, and how many, are not.
    """
    if consonants < 2:
        raise ValueError(f"elman:letters needs at least 2 consonants; got {consonants}")
    rng = np.random.default_rng(seed)
    draws = rng.choice(np.array(list(SYLLABLES)), size=consonants)
    segments = [tuple(SYLLABLES[c]) for c in draws]
    tokens = [s for seg in segments for s in seg]
    position = [i for seg in segments for i in range(len(seg))]
    encode = {s: np.array(v, np.float32) for s, v in LETTERS.items()}
    return _stream("letters", tokens, encode, tuple(LETTERS), position, LETTER_FEATURES, "sigmoid", segments, seed)


def sentences(count: int = 10_000, *, seed: int = 0) -> ElmanData:
    """Simple sentences: `count` sentences, each a uniformly chosen template of `TEMPLATES` with each
    category filled by a uniformly chosen word of it, concatenated without any boundary marker."""
    if count < 2:
        raise ValueError(f"elman:sentences needs at least 2 sentences; got {count}")
    rng = np.random.default_rng(seed)
    segments = []
    for i in rng.integers(0, len(TEMPLATES), size=count):
        segments.append(tuple(str(rng.choice(CATEGORIES[c])) for c in TEMPLATES[i]))
    tokens = [w for s in segments for w in s]
    position = [i for s in segments for i in range(len(s))]
    eye = np.eye(len(WORDS), dtype=np.float32)
    encode = {w: eye[i] for i, w in enumerate(WORDS)}
    cats = {w: tuple(c for c, ws in CATEGORIES.items() if w in ws) for w in WORDS}
    return _stream("sentences", tokens, encode, WORDS, position, WORDS, "softmax", segments, seed, cats)


_DEFAULT_SIZE = {"xor": 1000, "letters": 1000, "sentences": 10_000}


def load(name: str, *, seed: int = 0, size: int | None = None) -> ElmanData:
    """One of the paper's streams by name: "xor", "letters" or "sentences" (an "elman:" prefix is allowed).

    size: triples (xor, default 1000: 3000 bits), consonants (letters, default 1000), or sentences
    (default 10,000). The same name, seed and size always give the same stream.
    """
    key = name.removeprefix("elman:").lower()
    if key not in NAMES:
        raise ValueError(f"unknown Elman dataset {name!r}: use one of " + ", ".join(f"elman:{n}" for n in NAMES))
    n = _DEFAULT_SIZE[key] if size is None else size
    return {"xor": xor, "letters": letters, "sentences": sentences}[key](n, seed=seed)


def matches_template(sentence: tuple[str, ...] | list[str]) -> tuple[str, ...] | None:
    """The first template that `sentence` (a tuple of words) fills, or None if none does."""
    for template in TEMPLATES:
        if len(template) == len(sentence) and all(w in CATEGORIES[c] for w, c in zip(sentence, template, strict=True)):
            return template
    return None


def _hmm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The generator as a hidden Markov model over (template, position) states.

    Returns (A, E, start): A[s, s'] the transition probabilities, E[s, w] the probability that state s
    emits word w, start[s] the probability of starting in s.
    """
    states = [(i, j) for i, t in enumerate(TEMPLATES) for j in range(len(t))]
    index = {s: n for n, s in enumerate(states)}
    S, V = len(states), len(WORDS)
    firsts = np.array([index[(i, 0)] for i in range(len(TEMPLATES))])
    start = np.zeros(S)
    start[firsts] = 1.0 / len(TEMPLATES)
    A = np.zeros((S, S))
    E = np.zeros((S, V))
    words = {w: n for n, w in enumerate(WORDS)}
    for (i, j), s in index.items():
        template = TEMPLATES[i]
        if j + 1 < len(template):
            A[s, index[(i, j + 1)]] = 1.0
        else:
            A[s, firsts] = 1.0 / len(TEMPLATES)
        members = CATEGORIES[template[j]]
        for w in members:
            E[s, words[w]] = 1.0 / len(members)
    return A, E, start


def belief_states(data: ElmanData) -> Float[np.ndarray, "T S"]:
    """P(the generator is at (template, position) s | words 0..t) for every step t: the state of the best
    possible predictor after reading word t (the forward algorithm over the generator's own model)."""
    if data.name != "elman:sentences":
        raise ValueError(f"belief_states is defined for elman:sentences; got {data.name}")
    A, E, start = _hmm()
    words = {w: n for n, w in enumerate(data.vocab)}
    belief = start  # P(state of word 0), before seeing it
    out = np.empty((data.T, len(start)))
    for t, w in enumerate(data.tokens[:-1]):
        belief = belief * E[:, words[w]]
        out[t] = belief = belief / belief.sum()  # P(state of word t | words 0..t)
        belief = belief @ A  # P(state of word t+1 | words 0..t)
    return out


def next_word_distribution(data: ElmanData) -> Float[np.ndarray, "T V"]:
    """P(word t+1 | words 0..t) under the generator itself, for every step t: the best possible prediction.

    The stream has no sentence boundaries, so the generator is followed as a hidden Markov model over
    (template, position) and the forward algorithm gives the exact probabilities. Its cross-entropy
    against the stream is the lowest any predictor can reach on average.
    """
    if data.name != "elman:sentences":
        raise ValueError(f"next_word_distribution is defined for elman:sentences; got {data.name}")
    A, E, _ = _hmm()
    return belief_states(data) @ A @ E
