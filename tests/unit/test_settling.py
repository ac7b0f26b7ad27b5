"""streams.settling: a record's state is written only once the broker has its output, records are
acknowledged in their partition's order, and a key's next record starts from its saved state."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams import settling as settling_module
from streams.settling import Output, Settling

pytestmark = pytest.mark.unit


class Restarted(Exception):
    pass


class Stream:
    """The agent's noack() stream: what was acknowledged, in order, in a log shared with the states."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def ack(self, event: Any) -> bool:
        self.log.append(f"ack {event.name}")
        return True


def record(name: str, partition: int = 0) -> Any:
    return SimpleNamespace(name=name, message=SimpleNamespace(tp=TP("candles", partition)))


def output(key: str, log: list[str], *sends: asyncio.Future[Any]) -> Output:
    return Output(key, list(sends), lambda: log.append(f"state {key}"))


async def settled() -> None:
    for _ in range(5):  # the settling tasks' few steps
        await asyncio.sleep(0)


async def test_states_follow_their_own_acknowledgements_and_acks_follow_the_partition_order() -> None:
    log: list[str] = []
    settling = Settling("agent", Stream(log))
    loop = asyncio.get_running_loop()
    sent_a, sent_b, sent_c = loop.create_future(), loop.create_future(), loop.create_future()
    await settling.settle(record("A"), output("a", log, sent_a))
    await settling.settle(record("B"), output("b", log, sent_b))
    await settling.settle(record("C", partition=1), output("c", log, sent_c))
    await settled()
    assert log == []  # nothing written or acknowledged before the broker has it

    sent_b.set_result(None)
    sent_c.set_result(None)
    await settled()
    # B's state is written, but B waits for A, the earlier record of its partition; C's partition is free.
    assert log == ["state b", "state c", "ack C"]

    sent_a.set_result(None)
    await settled()
    assert log == ["state b", "state c", "ack C", "state a", "ack A", "ack B"]


async def test_a_record_without_output_is_acknowledged_at_once_unless_an_earlier_one_is_pending() -> None:
    log: list[str] = []
    settling = Settling("agent", Stream(log))
    await settling.settle(record("A"), None)
    await settling.settle(record("B"), output("b", log))  # nothing sent: the state is written at once
    assert log == ["ack A", "state b", "ack B"]

    sent = asyncio.get_running_loop().create_future()
    await settling.settle(record("C"), output("c", log, sent))
    await settling.settle(record("D"), None)
    await settled()
    assert log[3:] == []
    sent.set_result(None)
    await settled()
    assert log[3:] == ["state c", "ack C", "ack D"]


async def test_the_next_record_of_a_key_waits_until_the_previous_one_is_settled() -> None:
    log: list[str] = []
    settling = Settling("agent", Stream(log))
    loop = asyncio.get_running_loop()
    sent = loop.create_future()
    await settling.settle(record("A"), output("a", log, sent))
    other_key = asyncio.create_task(settling.ready("b"))
    same_key = asyncio.create_task(settling.ready("a"))
    await settled()
    assert other_key.done() and not same_key.done()
    sent.set_result(None)
    await asyncio.wait_for(same_key, 1)
    assert log == ["state a", "ack A"]


async def test_output_the_broker_refused_restarts_the_worker_before_any_state_or_ack(monkeypatch) -> None:
    log: list[str] = []
    restarts: list[str] = []

    def restart_worker(reason: str) -> None:
        restarts.append(reason)
        raise Restarted  # the real one ends the process here

    monkeypatch.setattr(settling_module, "restart_worker", restart_worker)
    settling = Settling("prediction_agent", Stream(log))
    sent = asyncio.get_running_loop().create_future()
    await settling.settle(record("A"), output("BTC/USD", log, sent))
    sent.set_exception(RuntimeError("KafkaTimeoutError"))
    with pytest.raises(Restarted):
        await settling.ready("BTC/USD")
    assert log == []
    assert restarts == [
        "prediction_agent: the broker did not take the output for BTC/USD (RuntimeError('KafkaTimeoutError'))"
    ]
