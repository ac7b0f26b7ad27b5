"""streams.ahead: work started before its record arrives is taken by that very record only, and only
while the saved state is the one it started from; anything else drops it, so the record is worked on
again from the saved state."""

from __future__ import annotations

import asyncio

import pytest

from streams.ahead import MadeAhead

pytestmark = pytest.mark.unit

BASE = object()  # the saved state the work starts from


async def give(value: str, log: list[str]) -> str:
    log.append(f"ran {value}")
    return value


async def test_the_record_takes_the_work_made_for_it_once() -> None:
    log: list[str] = []
    outcomes: list[str] = []
    ahead: MadeAhead[str, str] = MadeAhead(outcomes.append)
    ahead.start("BTC", "candle 1", BASE, give("forecast 1", log))
    assert ahead.pending("BTC") and not ahead.pending("ETH")
    await asyncio.sleep(0)
    assert log == ["ran forecast 1"]  # started before the record came

    made = ahead.take("BTC", "candle 1", BASE)
    assert made is not None and await made == "forecast 1"
    assert ahead.take("BTC", "candle 1", BASE) is None  # taken: the next arrival does the work itself
    assert not ahead.pending("BTC")
    assert outcomes == ["taken"]


async def test_another_record_drops_what_was_made_ahead() -> None:
    log: list[str] = []
    outcomes: list[str] = []
    ahead: MadeAhead[str, str] = MadeAhead(outcomes.append)
    ahead.start("BTC", "candle 2", BASE, give("forecast 2", log))
    assert (
        ahead.take("BTC", "candle 1", BASE) is None
    )  # an earlier candle came (a replay): it is worked on anew
    assert not ahead.pending("BTC")
    assert ahead.take("BTC", "candle 2", BASE) is None  # dropped for good, not kept for later
    assert outcomes == ["dropped"]


async def test_a_saved_state_replaced_meanwhile_drops_what_was_made_ahead() -> None:
    log: list[str] = []
    outcomes: list[str] = []
    ahead: MadeAhead[str, str] = MadeAhead(outcomes.append)
    ahead.start("BTC", "candle 2", BASE, give("forecast 2", log))
    recovered = object()  # a hand-over's recovery put an equal state, but another value, in the table
    assert ahead.take("BTC", "candle 2", recovered) is None
    assert outcomes == ["dropped"]


async def test_keys_are_apart_and_a_new_start_replaces_the_old() -> None:
    log: list[str] = []
    outcomes: list[str] = []
    ahead: MadeAhead[str, str] = MadeAhead(outcomes.append)
    ahead.start("BTC", "candle 1", BASE, give("btc 1", log))
    ahead.start("ETH", "candle 1", BASE, give("eth 1", log))
    ahead.start("BTC", "candle 2", BASE, give("btc 2", log))
    assert outcomes == ["dropped"]
    eth, btc = ahead.take("ETH", "candle 1", BASE), ahead.take("BTC", "candle 2", BASE)
    assert eth is not None and btc is not None
    assert (await eth, await btc) == ("eth 1", "btc 2")


async def test_a_failure_in_dropped_work_is_reported_to_the_loop() -> None:
    reported: list[BaseException] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["exception"]))

    async def fail() -> str:
        raise RuntimeError("model failed")

    ahead: MadeAhead[str, str] = MadeAhead()
    ahead.start("BTC", "candle 1", BASE, fail())
    await asyncio.sleep(0)
    assert ahead.take("BTC", "candle 0", BASE) is None
    await asyncio.sleep(0)
    assert [str(exc) for exc in reported] == ["model failed"]
