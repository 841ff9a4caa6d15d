"""The one mapping from errors to answers (accel.api.failures), for errors raised
before routing, where Starlette's own handlers never see them."""

from __future__ import annotations

import json
import sqlite3

import pytest
from sqlalchemy.exc import OperationalError
from starlette.testclient import TestClient
from starlette.types import Receive, Scope, Send

from accel.api.failures import Failures
from accel.errors import Conflict


def raising(exc: Exception) -> Failures:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise exc

    return Failures(app)


def fault(answer: object) -> dict[str, object]:
    return dict(json.loads(answer.json()["error_message"]))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("SELECT secret FROM t WHERE x = ?", {"x": 1}, Exception("refused")),
        sqlite3.OperationalError("database or disk is full"),
    ],
)
def test_the_database_away_is_503_without_the_sql(exc: Exception) -> None:
    answer = TestClient(raising(exc)).get("/anything")
    assert answer.status_code == 503
    assert fault(answer)["faultcode"] == "Server"
    assert "secret" not in answer.text and "database" in str(fault(answer)["faultstring"])


def test_accel_errors_keep_their_status() -> None:
    answer = TestClient(raising(Conflict("taken"))).get("/")
    assert answer.status_code == 409 and fault(answer)["faultstring"] == "taken"


def test_a_bug_is_a_json_500_and_still_reaches_the_server_log() -> None:
    with pytest.raises(ZeroDivisionError):
        TestClient(raising(ZeroDivisionError("x"))).get("/")
    answer = TestClient(raising(ZeroDivisionError("x")), raise_server_exceptions=False).get("/")
    assert answer.status_code == 500
    assert answer.headers["content-type"] == "application/json"
    assert "ZeroDivisionError" not in answer.text
