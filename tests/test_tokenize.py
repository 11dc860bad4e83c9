"""The tokenizer matches the tokenizer as first written (tests/tokenize_reference.py) token for token: on every
text of every task under ../shared/data, on hand-written hard cases and on seeded random strings of emoji
pieces, joiners, selectors, whitespace and punctuation."""

from __future__ import annotations

import importlib
import random
import re
import sys
from pathlib import Path

import emoji
import pytest

import tokenize_reference as reference
from rnnlab.data import load, tokenize

module = importlib.import_module("rnnlab.data.tokenize")
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TASKS = ("tweeteval/emotion", "tweeteval/hate", "tweeteval/irony",
         "umsab/english", "umsab/french", "umsab/italian", "umsab/spanish")


def test_every_shared_text_tokenized_as_the_reference_does():
    if not DATA.is_dir():
        pytest.skip(f"no data at {DATA}")
    module.clear_cache()  # the first pass tokenizes every chunk afresh, the second from the cache
    texts = [t for task in TASKS for split in load(DATA / task).splits.values() for t in split.texts]
    assert len(texts) > 30_000
    first = [tokenize(t) for t in texts]
    pairs = zip(texts, map(reference.tokenize, texts), first, strict=True)
    mismatched = [(t, want, got) for t, want, got in pairs if want != got]
    assert not mismatched, f"{len(mismatched)} texts differ, e.g. {mismatched[:3]}"
    assert [tokenize(t) for t in texts] == first


HARD = [
    # ZWJ sequences, whole, broken, joined without a sequence, with a stray selector between
    "👨‍👩‍👧‍👦", "👩🏽‍💻 at work", "🏳️‍🌈🏳️‍⚧️", "👨‍👩‍x", "😂\ufe0f\u200d😂", "👨‍", "\u200d👍", "👍\u200d\u200d👍",
    "🧑🏿‍🤝‍🧑🏻", "👁️‍🗨️", "❤️‍🔥❤‍🩹",
    # skin tones and other components, alone and after a joiner
    "👋🏽👋🏿", "🏽", "👋 🏽", "🏽‍", "a🏽‍b", "👍🏽‍🦰", "🦰‍x", "x‍🦰", "👩‍🦰‍🦱",
    # flags: pairs, an odd regional indicator, a tag sequence
    "🇺🇸🇬🇧", "🇺🇸🇬", "🇺", "🏴󠁧󠁢󠁳󠁣󠁴󠁿!", "🏴󠁧󠁢", "🇫🇷🇫🇷🇫🇷🇫🇷",
    # keycaps with and without the selector, glued to digits
    "1️⃣2️⃣", "#️⃣", "*⃣", "1⃣", "#1️", "call 911️⃣", "10⃣0", "#️⃣hashtag",
    # emoji glued to words, mentions, hashtags, URLs and emoticons
    "happy😂😂😂", "😂happy", "#blessed🙏", "@user😂", "https://t.co/x😂", ":)😂", "😂:)", "so😂good", "😂😂😂😂😂",
    # repeated letters and punctuation, case folding that makes or breaks a repeat
    "Sooooo", "SSSooo", "sSs", "!!!!!!", "hahahaha", "’’’", "a’’’b", "loooool", "İİİ", "ǅǆǄ", "...", "???!!!",
    # URLs, mentions, hashtags
    "http://x.co/a?b=c", "wwwww.site.com", "www.x.com/😂", "@User_1!", "#Love2019", "#_x", "#😂", "@", "#", "##a",
    "@a@b", "e-mail me@host.com", "HTTPS://X.CO",
    # other scripts
    "Привет мир!!!", "مرحبا بالعالم", "日本語のテキスト", "नमस्ते दुनिया", "ελληνικά ΣΟΦΙΑ", "한국어 😂", "עברית",
    # elision and contractions
    "l'amour", "L’amour", "qu'il", "aujourd'hui", "don't", "c'est", "rock'n'roll", "it's'", "'quoted'", "y'all'd've",
    "DON’T", "n't", "'s",
    # HTML entities, some of them whitespace
    "&amp;lt;", "&quot;hi&quot;", "&#128514;x", "&nbsp;x", "&amp\rfoo", "a&#32;b", "&#x1F44D;&#x1F3FD;",
    "&amp;&amp;&amp;",
    # whitespace of every kind, invisible characters, empty
    "", " ", "\n\t", "a\u00a0b", "a\u2003b", "a\x1cb", "\u200b", "a\u200bb", "a\u3000\u3000\u3000b", "\ufe0f\ufe0e",
    # emoticons, alone and against words
    ":-)", ":D", "<3<3", "</3", "xD", "8)", "(:", ":)))", "http:)", "a:)", ":)a", ":-P;)", "<<33",
    # symbols that are emoji with or without a selector
    "©2019", "™", "‼️", "↔️", "®️®", "☺☺️",
]


@pytest.mark.parametrize("text", HARD)
def test_hard_case_tokenized_as_the_reference_does(text):
    module.clear_cache()
    assert tokenize(text) == reference.tokenize(text)
    assert tokenize(text) == reference.tokenize(text)  # again, from the cache


@pytest.mark.parametrize(("text", "tokens"), [
    ("l'amour qu’il", ["l'amour", "qu'il"]),  # an elision is one word; a contraction of English splits
    ("I'd  DON’T", ["i", "'d", "do", "n't"]),
    ("👨‍👩‍👧 👋🏽🇫🇷1️⃣", ["👨‍👩‍👧", "👋🏽", "🇫🇷", "1️⃣"]),  # a family, a toned hand, a flag, a keycap: one each
    ("go😂😂😂😂!!!!", ["go", "😂", "😂", "!", "!"]),  # repeats cut to two, emoji too
    ("#Sooo_happy https://t.co/a😂 @Bob", ["#", "soo_happy", "<url>", "😂", "@user"]),
    ("Привееет мир", ["привеет", "мир"]),
    ("a\u00a0\u2003b&nbsp;c", ["a", "b", "c"]),
    ("", []),
])
def test_rules_on_hand_checked_cases(text, tokens):
    assert tokenize(text) == tokens


def _pieces() -> list[str]:
    rng = random.Random(0)
    keys = sorted(emoji.EMOJI_DATA)
    pieces = rng.sample(keys, 300) + [k for k in keys if "\u200d" in k][:60]
    pieces += [chr(c) for c in range(0x1F3FB, 0x1F400)] + ["🦰", "🦱", "🦲", "🦳"]  # skin tones, hair
    pieces += [chr(c) for c in (0x1F1EB, 0x1F1F7, 0x1F1FA, 0x1F1F8, 0xE0067, 0xE0062, 0xE007F, 0x1F3F4)]
    pieces += ["\u200d", "\u200d", "\ufe0f", "\ufe0f", "\ufe0e", "\u20e3", "\u200b", "#", "*", "1", "9", "0"]
    pieces += [*"aAxXDdPpé߸İ'’-_:;=8)(][<>3/\\|@!.?,&", "n't", "'s", "http://", "www.", "&amp;", "&#32;"]
    pieces += [" ", " ", "\n", "\t", "\xa0", "\u3000", "\x1c", "ooo", "AAA", "!!!", "😂😂😂", "l'", "qu’"]
    return pieces


def test_random_strings_tokenized_as_the_reference_does():
    rng = random.Random(1)
    pieces = _pieces()
    texts = ["".join(rng.choices(pieces, k=rng.randint(1, 12))) for _ in range(4000)]
    module.clear_cache()
    for _ in range(2):  # afresh, then from the cache
        mismatched = [t for t in texts if tokenize(t) != reference.tokenize(t)]
        assert not mismatched, f"{len(mismatched)} of {len(texts)} differ, e.g. {mismatched[:3]!r}"


def test_premises_of_the_shortcuts():
    # The tokenizer splits a tweet on str.split()'s whitespace and its patterns use \s, \S: they must agree,
    # and no emoji may hold whitespace. A chunk with no non-ASCII character of an emoji skips the emoji search:
    # every emoji must hold one.
    assert all(not e.isascii() for e in emoji.EMOJI_DATA)
    space = re.compile(r"\s")
    differ = [hex(c) for c in range(sys.maxunicode + 1) if bool(space.match(chr(c))) != chr(c).isspace()]
    assert not differ
    assert not any(c.isspace() for e in emoji.EMOJI_DATA for c in e)


def test_long_chunks_are_tokenized_as_the_reference_does_and_not_remembered():
    module.clear_cache()
    long_punctuation, long_word = "!?" * 5000, "Bcd" * 40 + "e"   # a chunk as long as a served text; a long hashtag
    text = f"hi {long_punctuation} #{long_word} there"
    assert tokenize(text) == reference.tokenize(text)
    assert len(tokenize(text)) == 2 + len(long_punctuation) + 2
    # remembered: the short chunks and their words alone, whatever the long ones hold
    assert module._chunk_tokens.cache_info().currsize == 2
    assert module._split_word.cache_info().currsize == 2
    short = "x" * module._LONGEST
    tokenize(short)
    assert module._chunk_tokens.cache_info().currsize == 3


def test_returned_tokens_are_the_callers_to_change():
    tokens = tokenize("good day 😂")
    tokens.append("changed")
    tokens[0] = "bad"
    assert tokenize("good day 😂") == ["good", "day", "😂"]


def test_squeeze_repeats_keeps_as_many_as_asked():
    assert module.squeeze_repeats("sooo  ggggood") == "soo  ggood"
    assert module.squeeze_repeats("sooo  ggggood", 1) == "so god"
    assert module.squeeze_repeats("a\n\n\nb", 1) == "a\nb"  # any character, newlines too
