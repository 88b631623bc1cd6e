"""The one base of the mistakes a user can fix: each is explained in one sentence, and the command-line tools
print it and exit with code 2, no traceback. A leaf module: anything may import it without pulling more in."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (a config, a file, a cluster setting), explained in one sentence."""


class ConfigError(UserError, ValueError):
    """A configuration mistake, explained in one sentence."""


def os_error(e: OSError) -> str:
    """One sentence for a file operation that failed."""
    return f"{e.strerror or e} ({e.filename})." if e.filename else f"{e.strerror or e}."
