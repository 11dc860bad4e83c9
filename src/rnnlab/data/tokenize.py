"""Tweets to tokens: the words x_1..x_T that an RNN reads, one per timestep.

    tokenize("@user Sooo happy!!! #blessed 😂 https://t.co/x")
    -> ['@user', 'soo', 'happy', '!', '!', '#', 'blessed', '😂', '<url>']

Rules, in order: HTML entities are decoded (`&amp;` -> `&`); URLs become `<url>`; mentions become
`@user` (TweetEval's own anonymisation); a hashtag becomes `#` then its word, so `#happy` shares the
embedding of `happy`; each emoji is one token (skin tones kept with it); common emoticons (`:)`, `:-(`,
`<3`, ...) are one token; a character repeated 3+ times is cut to 2 (`sooo` -> `soo`); English
contractions split as GloVe's corpus splits them (`don't` -> `do n't`, `it's` -> `it 's`); everything
is lower-cased; other punctuation is one token per character.

No token spans whitespace, so each whitespace-free chunk of a tweet is tokenized alone and its tokens are
remembered (an LRU cache of `_CACHED` chunks of at most `_LONGEST` characters; `clear_cache()` empties
it): a chunk seen before costs a lookup.
"""

from __future__ import annotations

import functools
import html
import re

import emoji

URL = "<url>"
USER = "@user"

_EMOTICON = r"(?:[<>]?[:;=8xX][\-o\*']?[\)\]\(\[dDpP/\\\|@3]+|[\)\]\(\[dDpP/\\\|@]+[\-o\*']?[:;=8]|<3+|</3+)"
_URL = r"(?:https?://\S+|ww+\.\S+)"  # www cut to ww by squeeze_repeats
_MENTION = r"@\w+"
_HASHTAG = r"#\w+"
_WORD = r"[^\W_](?:[\w'’\-]*[^\W_])?"
_TOKEN = re.compile(
    rf"(?P<url>{_URL})|(?P<user>{_MENTION})|(?P<tag>{_HASHTAG})|(?P<emoticon>(?<!\w){_EMOTICON}(?!\w))"
    rf"|(?P<word>{_WORD})|(?P<other>\S)",
    re.UNICODE,
)
_CONTRACTION = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")


_INVISIBLE = {"\ufe0f", "\ufe0e", "\u200d", "\u200b"}  # variation selectors and joiners left alone
_CACHED = 1 << 17  # chunks (and words) whose tokens are remembered
_LONGEST = 32      # characters of the longest chunk (or word) remembered: the caches' bytes stay bounded
# Every emoji holds at least one non-ASCII character of this set (no emoji is ASCII alone): a chunk
# without one has no emoji, and skips emoji.analyze.
_EMOJI_CHARS = frozenset(c for e in emoji.EMOJI_DATA for c in e if not c.isascii())
_SQUEEZE: dict[int, tuple[re.Pattern, str]] = {}


def _remembered(f):
    """f with an LRU cache of `_CACHED` results, for strings of at most `_LONGEST` characters: a longer one
    (rare in tweets, and rarely repeated) is worked out afresh, so that what a server is sent cannot fill its
    memory. The cache is safe to share between threads, and its results are tuples: no caller changes them."""
    cached = functools.lru_cache(maxsize=_CACHED)(f)

    @functools.wraps(f)
    def call(s: str):
        return cached(s) if len(s) <= _LONGEST else f(s)

    call.cache_clear, call.cache_info = cached.cache_clear, cached.cache_info
    return call


def squeeze_repeats(word: str, keep: int = 2) -> str:
    """A character repeated more than `keep` times in a row cut to `keep` (`"sooo"` -> `"soo"`)."""
    if keep not in _SQUEEZE:
        _SQUEEZE[keep] = (re.compile(r"(.)\1{" + str(keep) + ",}", re.DOTALL), r"\1" * keep)
    pattern, repl = _SQUEEZE[keep]
    return pattern.sub(repl, word)


@_remembered
def _split_word(word: str) -> tuple[str, ...]:
    word = squeeze_repeats(word.replace("’", "'").lower())
    m = _CONTRACTION.match(word)
    if m and "'" not in m.group(1):
        return m.group(1), m.group(2)
    return tuple(word.split("'")) if word.count("'") > 1 else (word,)


def _split_emoji(text: str) -> list[tuple[bool, str]]:
    """(is_emoji, piece) in order: each emoji (with its skin tone and joiners) alone, text between."""
    if text.isascii() or _EMOJI_CHARS.isdisjoint(text):
        return [(False, text)] if text else []
    pieces: list[tuple[bool, str]] = []
    last = 0
    for match in emoji.analyze(text, non_emoji=False, join_emoji=True):
        start = match.value.start
        if start > last:
            pieces.append((False, text[last:start]))
        pieces.append((True, match.chars))
        last = match.value.end
    if last < len(text):
        pieces.append((False, text[last:]))
    return pieces


@_remembered
def _chunk_tokens(chunk: str) -> tuple[str, ...]:
    """The tokens of one whitespace-free chunk of a tweet."""
    tokens: list[str] = []
    for is_emoji, piece in _split_emoji(squeeze_repeats(chunk)):
        if is_emoji:
            tokens.append(piece)
            continue
        for m in _TOKEN.finditer(piece):
            kind, value = m.lastgroup, m.group()
            if kind == "url":
                tokens.append(URL)
            elif kind == "user":
                tokens.append(USER)
            elif kind == "tag":
                tokens.append("#")
                tokens.extend(_split_word(value[1:]))
            elif kind == "emoticon":
                tokens.append(value)
            elif kind == "word":
                tokens.extend(_split_word(value))
            else:
                tokens.append(value)
    return tuple(t for t in tokens if t and t not in _INVISIBLE)


def tokenize(text: str) -> list[str]:
    """The tokens of one tweet (possibly empty), per the rules in this module's docstring."""
    # Whitespace ends every token and every emoji, and no run of 3+ repeats holds both whitespace and not:
    # each whitespace-free chunk is tokenized alone, and its tokens remembered.
    tokens: list[str] = []
    for chunk in html.unescape(text).split():
        tokens += _chunk_tokens(chunk)
    return tokens


def clear_cache() -> None:
    """Forget the remembered tokens of chunks and words (to time a first pass)."""
    _chunk_tokens.cache_clear()
    _split_word.cache_clear()
