"""caravan.token_file: the one reader of ACL token files."""

from __future__ import annotations

import pytest

from caravan.token_file import TokenFileError, read_token_file

FILES = {"/run/tok": "  s3cr3t\n", "/run/empty": " \n"}


def read(path: str) -> str:
    if path not in FILES:
        raise FileNotFoundError(2, "No such file or directory")
    return FILES[path]


def test_the_token_without_surrounding_whitespace() -> None:
    assert read_token_file("/run/tok", "consul.token_file", read) == "s3cr3t"


@pytest.mark.parametrize(("path", "message"), [
    ("/run/missing", "consul.token_file '/run/missing': cannot read it (No such file or directory)"),
    ("/run/empty", "consul.token_file '/run/empty': is empty; expected a token"),
], ids=["missing", "empty"])
def test_errors_name_the_field_and_path_never_the_token(path: str, message: str) -> None:
    with pytest.raises(TokenFileError) as info:
        read_token_file(path, "consul.token_file", read)
    assert str(info.value) == message
