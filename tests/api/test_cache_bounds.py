"""The bounded maps of the api: the response cache's byte budget, the token cache's
bound and lifetime (cachetools under both)."""

from __future__ import annotations

import asyncio

from starlette.requests import Request

from accel.api.cache import GenerationWatch, ResponseCache
from accel.api.keystone import KeystoneValidator
from accel.db.engine import make_engine, migrate
from tests.api.test_keystone import FakeIdentity, identity  # noqa: F401 (a fixture)


def get(path: str) -> Request:
    return Request(
        {
            "type": "http",
            "method": "GET",
            "path": path,
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1")],
            "scheme": "http",
            "server": ("127.0.0.1", 80),
        }
    )


def test_the_least_recently_used_answers_go_beyond_the_byte_budget(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    migrate(engine)
    cache = ResponseCache(max_bytes=25)
    cache.watch = GenerationWatch(engine)
    rendered: list[str] = []

    def render(path: str, size: int) -> None:
        async def body() -> bytes:
            rendered.append(path)
            return b"x" * size

        asyncio.run(cache.rendered(get(path).scope, "a:rule", body))

    try:
        render("/a", 10)
        render("/b", 10)
        render("/a", 10)  # cached, and now the most recently used
        render("/c", 10)  # 30 bytes: /b, the least recently used, goes
        render("/a", 10)
        render("/b", 10)  # rendered again: it was dropped (and /c goes now)
        render("/huge", 26)  # over the whole budget: served, never kept
        render("/huge", 26)
        assert rendered == ["/a", "/b", "/c", "/b", "/huge", "/huge"]
    finally:
        cache.watch.close()
        engine.dispose()


def test_the_token_cache_keeps_answers_for_a_while_and_at_most_max_cached(
    identity: tuple[str, FakeIdentity],  # noqa: F811
) -> None:
    url, fake = identity

    async def ask(validator: KeystoneValidator, tokens: list[str]) -> None:
        try:
            for token in tokens:
                await validator.identity(token)
        finally:
            await validator.aclose()

    kept = KeystoneValidator(url, max_cached=1)
    # The second admin-token is a hit; member-token pushes it out; so it is asked again.
    asyncio.run(ask(kept, ["admin-token", "admin-token", "member-token", "admin-token"]))
    assert fake.calls == 3

    fake.calls = 0
    expired = KeystoneValidator(url, cache_seconds=0)  # every answer has expired at once
    asyncio.run(ask(expired, ["admin-token", "admin-token"]))
    assert fake.calls == 2
