"""The one reader of secret token files (Consul and Nomad ACL tokens), pure but for the
injected ``read_file``.

``read_token_file(path, what)`` returns the file's text without surrounding whitespace.
A file that cannot be read, or that holds nothing, raises ``TokenFileError`` (a
ValueError) naming ``what`` (the spec field or environment variable that named the
file) and the path; the token itself never appears in a message.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from caravan.errors import ConfigError


class TokenFileError(ConfigError):
    """A token file that cannot be read or is empty."""


def _read(path: str) -> str:
    return Path(path).read_text()


def read_token_file(path: str, what: str, read_file: Callable[[str], str] = _read) -> str:
    """The token in ``path``. Raises TokenFileError naming ``what`` and ``path``."""
    try:
        token = read_file(path).strip()
    except OSError as exc:
        raise TokenFileError(f"{what} {path!r}: cannot read it ({exc.strerror})") from None
    if not token:
        raise TokenFileError(f"{what} {path!r}: is empty; expected a token")
    return token
