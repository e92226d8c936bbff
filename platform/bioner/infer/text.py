"""Raw text -> words with character offsets, split as the corpora split them."""

from __future__ import annotations

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
