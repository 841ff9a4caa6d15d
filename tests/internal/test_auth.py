"""The internal token: where it is read from, what is refused, and how a request shows it."""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

from accel.internal.auth import (
    ENV_TOKEN,
    MIN_TOKEN_LENGTH,
    TokenMissing,
    bearer_matches,
    create_token_file,
    load_token,
)

TOKEN = "s3cret-token-of-32-characters-ok"


def test_a_token_file_is_read_without_its_surrounding_whitespace(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")
    assert load_token(path) == TOKEN


def test_a_token_file_wins_over_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_TOKEN, "from-the-environment-0123456789")
    path = tmp_path / "token"
    path.write_text(TOKEN)
    assert load_token(path) == TOKEN


def test_without_a_file_the_token_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_TOKEN, f"{TOKEN}\n")
    assert load_token(None) == TOKEN


def test_an_unreadable_file_is_named_in_the_refusal(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(TokenMissing, match=r"cannot read internal token file .*nowhere"):
        load_token(missing)


def test_no_token_anywhere_says_how_to_give_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_TOKEN, raising=False)
    with pytest.raises(TokenMissing, match="--internal-token-file or set ACCEL_INTERNAL_TOKEN"):
        load_token(None)


def test_a_blank_file_is_no_token(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(" \n")
    with pytest.raises(TokenMissing, match="no internal token"):
        load_token(path)


def test_a_short_token_is_refused_naming_where_it_came_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    short = "x" * (MIN_TOKEN_LENGTH - 1)
    path = tmp_path / "token"
    path.write_text(short)
    refusal = re.escape(f"from {path} is shorter than {MIN_TOKEN_LENGTH}")
    with pytest.raises(TokenMissing, match=refusal):
        load_token(path)
    monkeypatch.setenv(ENV_TOKEN, short)
    with pytest.raises(TokenMissing, match=f"from {ENV_TOKEN} is shorter"):
        load_token(None)
    path.write_text("x" * MIN_TOKEN_LENGTH)
    assert load_token(path) == "x" * MIN_TOKEN_LENGTH


def test_a_created_token_file_is_its_owners_alone_and_loads(tmp_path: Path) -> None:
    path = create_token_file(tmp_path / "state" / "internal-token")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(load_token(path)) >= MIN_TOKEN_LENGTH


def test_an_existing_token_file_is_kept_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(TOKEN)
    assert create_token_file(path) == path
    assert path.read_text() == TOKEN


def test_two_created_token_files_hold_different_tokens(tmp_path: Path) -> None:
    first = load_token(create_token_file(tmp_path / "a"))
    second = load_token(create_token_file(tmp_path / "b"))
    assert first != second


@pytest.mark.parametrize(
    "header",
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer {TOKEN}  "],
)
def test_the_bearer_scheme_in_any_case_carries_the_token(header: str) -> None:
    assert bearer_matches(header, TOKEN)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        TOKEN,  # no scheme
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer ",
    ],
)
def test_anything_else_does_not_match(header: str | None) -> None:
    assert not bearer_matches(header, TOKEN)
