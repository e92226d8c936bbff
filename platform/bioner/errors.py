"""User-facing errors: the CLI prints their message on one line and exits 2, no traceback."""


class BionerError(Exception):
    """A mistake in the user's input (corpus, spec, config, arguments)."""


class CorpusError(BionerError):
    """A malformed corpus file. The message starts with `FILE:LINE:`."""

    def __init__(self, path, line: int, what: str):
        self.path, self.line, self.what = str(path), line, what
        super().__init__(f"{path}:{line}: {what}")


class ConfigError(BionerError):
    """A bad configuration value. The message names the key."""
