"""Errors a user reads: the CLI prints their message on one line, no traceback. A `BionerError` is
the user's mistake (exit 2: fix the input and run again); a `SystemFailure` is the system's (exit 1:
the input was accepted, something under it failed; the message says where to look)."""

from __future__ import annotations

from pydantic import ValidationError


class BionerError(Exception):
    """A mistake in the user's input (corpus, spec, config, arguments)."""


class SystemFailure(Exception):
    """A failure of the system under a valid job: Ray workers that died or raised, a service that did not
    start. Not a BionerError, so that no handler of user mistakes takes it for one."""


class CorpusError(BionerError):
    """A malformed corpus file. The message starts with `FILE:LINE:`."""

    def __init__(self, path, line: int, what: str):
        self.path, self.line, self.what = str(path), line, what
        super().__init__(f"{path}:{line}: {what}")


class ConfigError(BionerError):
    """A bad configuration value. The message names the key."""


def format_validation_error(e: ValidationError) -> str:
    """Pydantic errors as `key.path: message` on one line (the first three, then a count)."""
    parts = []
    for err in e.errors():
        key = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        parts.append(f"{key}: {msg}")
    more = f" (and {len(parts) - 3} more)" if len(parts) > 3 else ""
    return "; ".join(parts[:3]) + more


def first_line(e: BaseException, limit: int = 300) -> str:
    """The first non-blank line of an exception's message (its type when it has none)."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]
