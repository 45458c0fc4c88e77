"""Redis authentication on a real Valkey started with ``requirepass``.

A client with the right password works; a wrong or missing password is refused with an
error that says so, and the feature store turns that refusal into one clear
``FeatureStoreError`` (at once, without retrying, and without echoing the password).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType

import pytest
import redis
from pydantic import SecretStr

from features.settings import RedisSettings
from streams.embedded import EmbeddedValkey

PASSWORD = "s3cret"


@pytest.fixture(scope="module")
def valkey() -> Iterator[EmbeddedValkey]:
    with EmbeddedValkey(password=PASSWORD) as v:
        yield v


@pytest.fixture
def client(valkey: EmbeddedValkey) -> Iterator[Callable[..., redis.Redis]]:
    made: list[redis.Redis] = []

    def make(**kwargs: object) -> redis.Redis:
        c = redis.Redis.from_url(valkey.url, socket_timeout=2.0, **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_right_password_works(client: Callable[..., redis.Redis], unique: Callable[[str], str]):
    r = client(password=PASSWORD)
    key = unique("auth")
    assert r.ping() is True
    r.set(key, b"v", ex=60)
    assert r.get(key) == b"v"


def test_right_password_in_url_works(valkey: EmbeddedValkey):
    url = f"redis://:{PASSWORD}@{valkey.host}:{valkey.port}/0"
    with redis.Redis.from_url(url, socket_timeout=2.0) as r:
        assert r.ping() is True


def test_missing_password_is_refused(client: Callable[..., redis.Redis]):
    r = client()
    with pytest.raises(redis.AuthenticationError, match=r"(?i)authenticat"):
        r.ping()


def test_wrong_password_is_refused(client: Callable[..., redis.Redis]):
    r = client(password="not-the-password")
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        r.ping()


def test_unknown_user_is_refused(client: Callable[..., redis.Redis]):
    r = client(username="mallory", password=PASSWORD)
    with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"):
        r.ping()


# -- the feature store -------------------------------------------------------------------


@pytest.fixture
def store_module() -> ModuleType:
    """``features.store``; these tests skip until it exists."""
    return pytest.importorskip("features.store")


def _settings(valkey: EmbeddedValkey, unique: Callable[[str], str], **kw: object) -> RedisSettings:
    # retry_attempts > 0: an auth failure must not be retried (it would only hide the cause).
    return RedisSettings(
        url=valkey.url, key_prefix=unique("ss"), retry_attempts=3, socket_timeout_s=2.0, **kw
    )


async def test_store_starts_with_right_password(
    store_module: ModuleType, valkey: EmbeddedValkey, unique: Callable[[str], str]
):
    store = store_module.FeatureStore(_settings(valkey, unique, password=SecretStr(PASSWORD)))
    await store.start()
    try:
        assert await store.get(unique("customer"), now=1_700_000_000.0) is None
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("extra", "user"),
    [
        ({}, "default"),
        ({"password": SecretStr("not-the-password")}, "default"),
        ({"username": "mallory", "password": SecretStr("not-the-password")}, "mallory"),
    ],
    ids=["missing", "wrong", "unknown-user"],
)
async def test_store_auth_failure_is_a_clear_error(
    store_module: ModuleType,
    valkey: EmbeddedValkey,
    unique: Callable[[str], str],
    extra: dict[str, object],
    user: str,
):
    store = store_module.FeatureStore(_settings(valkey, unique, **extra))
    with pytest.raises(store_module.FeatureStoreError) as info:
        await store.start()
    message = str(info.value)
    assert f"rejected user {user!r}" in message
    assert "STREAMSCORE_REDIS__PASSWORD" in message
    assert "not-the-password" not in message
    assert isinstance(info.value.__cause__, redis.exceptions.AuthenticationError)
    # Nothing half-open is left behind: the store can be closed (and started again later).
    await store.close()


async def test_store_auth_error_redacts_url_password(
    store_module: ModuleType, valkey: EmbeddedValkey, unique: Callable[[str], str]
):
    url = f"redis://:not-the-password@{valkey.host}:{valkey.port}/0"
    settings = RedisSettings(url=url, key_prefix=unique("ss"), retry_attempts=0)
    store = store_module.FeatureStore(settings)
    with pytest.raises(store_module.FeatureStoreError) as info:
        await store.start()
    assert "not-the-password" not in str(info.value)
    assert ":***@" in str(info.value)
