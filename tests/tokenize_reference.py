"""The tokenizer as first written (one emoji.analyze pass per tweet, a regex substitution per word): the
reference that tests/test_tokenize.py holds `rnnlab.data.tokenize` to, token for token, and the peer of
benchmarks/tokenize_speed.py. Not part of the package: kept unchanged, so that the package's faster
tokenizer must keep producing exactly what this one does.
"""

from __future__ import annotations

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


def squeeze_repeats(word: str, keep: int = 2) -> str:
    """A character repeated more than `keep` times in a row cut to `keep` (`"sooo"` -> `"soo"`)."""
    return re.sub(r"(.)\1{" + str(keep) + ",}", r"\1" * keep, word, flags=re.DOTALL)


def _split_word(word: str) -> list[str]:
    word = squeeze_repeats(word.replace("’", "'").lower())
    m = _CONTRACTION.match(word)
    if m and "'" not in m.group(1):
        return [m.group(1), m.group(2)]
    return word.split("'") if word.count("'") > 1 else [word]


def _split_emoji(text: str) -> list[tuple[bool, str]]:
    """(is_emoji, piece) in order: each emoji (with its skin tone and joiners) alone, text between."""
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


def tokenize(text: str) -> list[str]:
    """The tokens of one tweet (possibly empty), per the rules in this module's docstring."""
    tokens: list[str] = []
    for is_emoji, piece in _split_emoji(squeeze_repeats(html.unescape(text))):
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
    return [t for t in tokens if t and t not in _INVISIBLE]
