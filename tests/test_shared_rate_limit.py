"""A rate limit shared by replicas: `service.rate_limit_store` names a real redis-server (started for the test on
a free loopback port) and two apps, as two replicas, count one API key's requests in it together. Marked `redis`;
`.ci/run` installs redis-server and runs it.
"""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from tests.engines import RedisServer, redis_missing

pytestmark = pytest.mark.redis

KEYS = {"shared-key-1": "reader", "shared-key-2": "reader"}


@pytest.fixture(scope="module")
def redis_url():
    missing = redis_missing()
    if missing:
        pytest.skip(missing)
    server = RedisServer().start()
    yield server.url
    server.stop()


def _replica(application, url: str):
    import msgspec

    from service.app import create_app

    settings = msgspec.structs.replace(application.settings, service=msgspec.structs.replace(
        application.settings.service, api_keys=KEYS, rate_limit_per_minute=5, rate_limit_store=url))
    return create_app(settings, application=application)


def test_two_replicas_count_one_key_in_the_shared_store(application, redis_url):
    with TestClient(_replica(application, redis_url)) as a, TestClient(_replica(application, redis_url)) as b:
        statuses = []
        for i in range(5):  # 5 a minute in all: 3 on one replica, 2 on the other
            client = (a, b)[i % 2]
            r = client.get("/v1/trending", headers={"X-API-Key": "shared-key-1"})
            statuses.append(r.status_code)
        assert statuses == [200] * 5
        refused = b.get("/v1/trending", headers={"X-API-Key": "shared-key-1"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert a.get("/v1/trending", headers={"X-API-Key": "shared-key-1"}).status_code == 429
        # Another key has its own count; health stays exempt.
        assert a.get("/v1/trending", headers={"X-API-Key": "shared-key-2"}).status_code == 200
        assert b.get("/health").status_code == 200


def test_without_a_store_each_replica_counts_alone(application):
    with TestClient(_replica(application, "")) as a, TestClient(_replica(application, "")) as b:
        assert [a.get("/v1/trending", headers={"X-API-Key": "shared-key-1"}).status_code for _ in range(5)] == [200] * 5
        assert b.get("/v1/trending", headers={"X-API-Key": "shared-key-1"}).status_code == 200
        assert a.get("/v1/trending", headers={"X-API-Key": "shared-key-1"}).status_code == 429
