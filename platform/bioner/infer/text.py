"""Raw text -> words with character offsets, split as the corpora split them."""

from __future__ import annotations

import os
import re

from ..errors import BionerError

# Corpus-style word split: runs of letters/digits, or any single other visible character.
# The three corpora split punctuation off words the same way. Control and invisible format
# characters (C0/C1 controls, zero-width and bidi marks, BOM) and lone surrogates are never
# words: the tokenizer drops them, and a surrogate cannot even be encoded for it.
_INVISIBLE = "\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u206f\ufeff\ud800-\udfff"
WORD_RE = re.compile(rf"\w+|[^\w\s{_INVISIBLE}]", re.UNICODE)


def split_words(text: str) -> list[tuple[str, int, int]]:
    """(word, start, end) with character offsets into `text`."""
    return [(m.group(), m.start(), m.end()) for m in WORD_RE.finditer(text)]


def check_text(text: str, where: str) -> str:
    """Refuse a text that is not valid Unicode (a lone surrogate, e.g. from undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BionerError(f"{where}: not valid UTF-8 text (character {e.start + 1})") from None
    return text


# Bounds on what one text, and one request to a served model, may hold: a 5 MB line once took 309 s
# and 961 MB with a tiny BERT (issue 17), far beyond the scoring server's 60 s request timeout.
MAX_TEXT_CHARS_ENV, MAX_TEXT_CHARS_DEFAULT = "BIONER_MAX_TEXT_CHARS", 1_000_000
MAX_TEXTS_ENV, MAX_TEXTS_DEFAULT = "BIONER_MAX_TEXTS", 1_000


def env_limit(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BionerError(f"${name}={raw!r}: expected a whole number") from None
    if value < 1:
        raise BionerError(f"${name}={raw!r}: expected a number of at least 1")
    return value


def max_text_chars() -> int:
    return env_limit(MAX_TEXT_CHARS_ENV, MAX_TEXT_CHARS_DEFAULT)


def max_texts() -> int:
    return env_limit(MAX_TEXTS_ENV, MAX_TEXTS_DEFAULT)


def check_length(text: str, where: str, limit: int | None = None) -> str:
    limit = max_text_chars() if limit is None else limit
    if len(text) > limit:
        raise BionerError(f"{where}: {len(text):,} characters, more than the limit of {limit:,} per text (${MAX_TEXT_CHARS_ENV})")
    return text
