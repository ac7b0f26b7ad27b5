"""The news sources over real HTTP against the local news server: paging, rate limiting, server errors,
broken pages, conditional requests and duplicates. Only loopback and a server each test starts itself,
so these run with the unit tests (the integration conftest starts the shared stack, which is not
needed here)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web
from pydantic import SecretStr

from cryptopredict.models import NewsItem
from cryptopredict.news.sources import (
    SUMMARY_MAX,
    TITLE_MAX,
    ConditionalCache,
    CryptoPanicSource,
    FetchPolicy,
    NewsSourceError,
    RssSource,
)
from cryptopredict.simulators.news import INJECTION_TITLE, NewsFaults, NewsServer, sample_news_items

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

TOKEN = SecretStr("test-token")
ITEMS = sample_news_items(12)


def cryptopanic(url: str, **kwargs) -> CryptoPanicSource:
    return CryptoPanicSource(url, TOKEN, **{"max_pages": 10, **kwargs})


@pytest.fixture
async def client():
    async with httpx.AsyncClient() as http:
        yield http


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_pages_are_followed_through_next_links(client, version):
    async with NewsServer(ITEMS, page_size=5) as server:
        url = server.v1_url if version == "v1" else server.v2_url
        result = await cryptopanic(url).fetch(client)
        assert result.pages == 3 and result.rejected == [] and result.duplicates == 0
        assert [item.id for item in result.items] == [f"cryptopanic:{n}" for n in range(1, 13)]
        assert [item.title for item in result.items] == [item.title for item in ITEMS]
        assert [item.currencies for item in result.items] == [item.currencies for item in ITEMS]
        assert sum(server.requests.values()) == 3

        capped = await cryptopanic(url, max_pages=2, cache=ConditionalCache()).fetch(client)
        assert capped.pages == 2 and len(capped.items) == 10


async def test_the_currencies_filter_is_sent(client):
    async with NewsServer(ITEMS) as server:
        result = await cryptopanic(server.v2_url, currencies=["sol"]).fetch(client)
    assert result.items and all("SOL" in item.currencies for item in result.items)
    assert len(result.items) == sum("SOL" in item.currencies for item in ITEMS)


async def test_rate_limit_is_waited_out_as_retry_after_says(client):
    async with NewsServer(ITEMS, NewsFaults(rate_limited_requests=1, retry_after="1")) as server:
        started = time.monotonic()
        result = await cryptopanic(server.v1_url).fetch(client)
        elapsed = time.monotonic() - started
        assert elapsed >= 1.0
        assert len(result.items) == 12
        assert server.statuses[429] == 1 and server.statuses[200] == 3


async def test_a_long_retry_after_is_capped_and_the_retries_are_bounded(client):
    faults = NewsFaults(rate_limited_requests=10, retry_after="3600")
    policy = FetchPolicy(max_retries=2, max_wait_s=0.05)
    async with NewsServer(ITEMS, faults) as server:
        started = time.monotonic()
        with pytest.raises(NewsSourceError) as error:
            await RssSource(server.rss_url("all"), policy=policy).fetch(client)
        assert time.monotonic() - started < 5
        assert error.value.transient and error.value.status == 429
        assert server.statuses[429] == 3


async def test_a_server_error_is_transient(client):
    async with NewsServer(ITEMS, NewsFaults(server_error_requests=1)) as server:
        with pytest.raises(NewsSourceError) as error:
            await cryptopanic(server.v1_url).fetch(client)
        assert error.value.transient and error.value.status == 500
        assert "test-token" not in str(error.value)
        # The burst is over: the retry the activity would make succeeds.
        assert len((await cryptopanic(server.v1_url).fetch(client)).items) == 12


async def test_a_bad_token_is_permanent_and_not_echoed(client):
    async with NewsServer(ITEMS) as server:
        with pytest.raises(NewsSourceError) as error:
            await CryptoPanicSource(server.v1_url, SecretStr("wrong-token")).fetch(client)
    assert not error.value.transient and error.value.status == 401
    assert "wrong-token" not in str(error.value) and "auth_token=***" in str(error.value)


async def test_a_refused_connection_is_transient(client):
    async with NewsServer(ITEMS) as server:
        url = server.rss_url("all")
    with pytest.raises(NewsSourceError) as error:
        await RssSource(url).fetch(client)
    assert error.value.transient and error.value.status is None


async def test_a_malformed_json_page_is_rejected_not_raised(client):
    async with NewsServer(ITEMS, NewsFaults(malformed_json=True)) as server:
        result = await cryptopanic(server.v2_url).fetch(client)
    assert result.items == [] and result.pages == 1
    ((raw, reason),) = result.rejected
    assert reason.startswith("malformed JSON page") and raw.startswith('{"count"')


@pytest.mark.parametrize("kind", ["cryptopanic", "rss", "atom"])
async def test_an_unchanged_source_answers_304_and_yields_nothing(client, kind):
    async with NewsServer(ITEMS, page_size=50) as server:
        if kind == "cryptopanic":
            source: CryptoPanicSource | RssSource = cryptopanic(server.v1_url)
        else:
            source = RssSource(server.rss_url("all") if kind == "rss" else server.atom_url("all"))
        first = await source.fetch(client)
        assert len(first.items) == 12 and not first.not_modified
        again = await source.fetch(client)
        assert again.not_modified and again.items == [] and again.rejected == []
        assert server.log[-1].status == 304 and server.log[-1].if_none_match

        published = ITEMS[0].published_at + timedelta(minutes=5)
        server.items.insert(
            0,
            ITEMS[0].model_copy(
                update={"id": "coindesk:new", "title": "New headline", "published_at": published}
            ),
        )
        changed = await source.fetch(client)
        assert len(changed.items) == 13 and "New headline" in {item.title for item in changed.items}


async def test_duplicates_across_pages_come_out_once(client):
    async with NewsServer(ITEMS, NewsFaults(duplicate_across_pages=True), page_size=5) as server:
        result = await cryptopanic(server.v1_url).fetch(client)
    ids = [item.id for item in result.items]
    assert len(ids) == len(set(ids)) == 12
    assert result.duplicates == 2


async def test_rss_and_atom_give_the_same_items_with_stable_ids(client):
    async with NewsServer(ITEMS) as server:
        rss = await RssSource(server.rss_url("cointelegraph"), name="cointelegraph").fetch(client)
        atom = await RssSource(server.atom_url("cointelegraph"), name="cointelegraph").fetch(client)
        again = await RssSource(server.rss_url("cointelegraph"), name="cointelegraph").fetch(client)
    expected = [item for item in ITEMS if item.source == "cointelegraph"]
    assert [(i.title, i.summary, i.url, i.published_at) for i in rss.items] == [
        (i.title, i.summary, i.url, i.published_at) for i in expected
    ]
    assert [i.id for i in rss.items] == [i.id for i in atom.items] == [i.id for i in again.items]
    assert rss.items[0].id == f"cointelegraph:{expected[0].id}"


async def test_long_texts_are_bounded_and_injection_titles_arrive_as_data(client):
    async with NewsServer(ITEMS, NewsFaults(long_texts=True, injection_titles=True), page_size=20) as server:
        for source in (cryptopanic(server.v2_url), RssSource(server.atom_url("all"))):
            result = await source.fetch(client)
            assert len(result.items) == 12 and result.rejected == []
            assert all(len(i.title) <= TITLE_MAX and len(i.summary) <= SUMMARY_MAX for i in result.items)
            assert sum(i.title.startswith(INJECTION_TITLE) for i in result.items) == 4


async def test_a_next_link_to_another_host_is_not_followed(client):
    """A tampered page must not make the client send the token to someone else."""

    async def posts(request: web.Request) -> web.Response:
        item = {"id": 1, "title": "t", "url": "https://x.example/1", "published_at": "2025-01-06T09:00:00Z"}
        return web.json_response({"next": "http://203.0.113.9/steal?page=2", "results": [item]})

    app = web.Application()
    app.router.add_get("/api/v1/posts/", posts)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        result = await cryptopanic(f"http://127.0.0.1:{port}/api/v1/posts/").fetch(client)
    finally:
        await runner.cleanup()
    assert result.pages == 1 and len(result.items) == 1
    assert [reason for _raw, reason in result.rejected] == ["next link leaves the API origin: not followed"]


def test_sample_items_are_deterministic():
    assert sample_news_items(5) == sample_news_items(5)
    coins = {coin for item in sample_news_items() for coin in item.currencies}
    assert coins == {"BTC", "ETH", "SOL"}
    assert all(isinstance(item, NewsItem) and item.published_at.tzinfo is UTC for item in ITEMS)
    assert ITEMS[0].published_at == datetime(2025, 1, 6, 12, 0, tzinfo=UTC)
