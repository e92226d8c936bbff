"""Raw text -> words with character offsets, split as the corpora split them."""

from __future__ import annotations

import os

from ..data.sentences import WORD_RE, split_words
from ..errors import BionerError

# Words are split as the corpora split them (data.sentences, shared with documents' sentences).
__all__ = ["WORD_RE", "split_words", "check_text", "check_length", "max_text_chars", "max_texts", "env_limit"]


def check_text(text: str, where: str) -> str:
    """Refuse a text that is not valid Unicode (a lone surrogate, e.g. from undecodable bytes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise BionerError(f"{where}: not valid UTF-8 text (character {e.start + 1})") from None
    return text


# Bounds on what one text, and one request to a served model, may hold: an unbounded text is tagged
# far beyond the scoring server's request timeout (experiments/benchmarks/README.md, "Why a text is bounded").
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
        raise BionerError(
            f"{where}: {len(text):,} characters, more than the limit of {limit:,} per text (${MAX_TEXT_CHARS_ENV})"
        )
    return text
