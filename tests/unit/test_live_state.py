"""The prediction agent's state in memory (cryptopredict.ml.live_state): the table value it writes is the
one the agent wrote when it parsed the state from the table at every candle, the parsed state is reused
only while the table holds what it saved, and a restart, a hand-over, a partition taken away or a failed
candle all continue from the table, as an uninterrupted run would."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any

import pytest

from cryptopredict.features.indicators import IndicatorConfig, IndicatorState
from cryptopredict.ml.live_state import LiveState, LiveStates
from cryptopredict.models import Candle
from cryptopredict.simulators.markets import synthetic_candles

pytestmark = pytest.mark.unit

CONFIG = IndicatorConfig(sma_windows=(3, 5), ema_windows=(3,), rsi_window=3, macd_fast=3, macd_slow=5,
                         macd_signal=2, bb_window=4, atr_window=3)  # fmt: skip
HISTORY = 12
KEY = "TST/USD"
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def candles(n: int = 90) -> list[Candle]:
    """A random walk with a gap candle every 7 minutes (a market's candles come from one such walk)."""
    return synthetic_candles(KEY, 60, n, T0, seed=4, gap_every=7)


def recovered(value: Any) -> Any:
    """A table value as the changelog gives it back: JSON decoded into a new object."""
    return json.loads(value if isinstance(value, bytes) else json.dumps(value))


def parsed_every_candle(stream: list[Candle]) -> list[dict[str, Any]]:
    """The table value after each candle, as the agent computed it when it parsed the stored state at
    every candle and wrote it back whole."""
    table: dict[str, Any] = {}
    written = []
    for candle in stream:
        stored = table.get(KEY)
        history = [] if stored is None else [Candle.model_validate(c) for c in stored["candles"]]
        indicators = (
            IndicatorState.new(candle.market, candle.interval_s, CONFIG)
            if stored is None
            else IndicatorState.model_validate(stored["indicators"])
        )
        indicators.update(candle)
        history = [*history, candle][-HISTORY:]
        table[KEY] = {
            "candles": [c.model_dump(mode="json") for c in history],
            "indicators": indicators.model_dump(mode="json"),
        }
        written.append(recovered(table[KEY]))
    return written


def run(states: LiveStates, stream: list[Candle]) -> list[dict[str, Any]]:
    """Each candle through `states` as the agent does (advance, forecasts, save): the table values."""
    written = []
    for candle in stream:
        state = states.advance(KEY, candle)
        assert state is not None, candle.window_start
        assert state.candles[-1] is candle and len(state.candles) <= HISTORY
        states.save(KEY, state)
        written.append(recovered(states.table[KEY]))
    return written


def test_the_table_gets_what_parsing_it_at_every_candle_wrote_while_memory_is_parsed_once():
    stream, nxt = candles()[:80], candles()[80]
    states = LiveStates({}, HISTORY, CONFIG)
    assert run(states, stream) == parsed_every_candle(stream)
    assert states.loads == 0  # never read back: the table always held what memory saved
    # What memory holds is what the table would give: the same candles, indicators and next values.
    state = states.advance(KEY, nxt)
    assert state is not None
    again = LiveState.load(recovered(states.table[KEY]), HISTORY)
    assert again.push(nxt) and again.values == state.values and list(again.candles) == list(state.candles)
    assert again.indicators == state.indicators


def test_a_restart_continues_from_the_recovered_table_as_an_uninterrupted_run():
    stream = candles()
    uninterrupted = parsed_every_candle(stream)
    first = LiveStates({}, HISTORY, CONFIG)
    run(first, stream[:30])
    restarted = LiveStates({KEY: recovered(first.table[KEY])}, HISTORY, CONFIG)
    assert run(restarted, stream[30:]) == uninterrupted[30:]
    assert restarted.loads == 1


def test_a_partition_handed_away_and_back_is_read_from_the_table_not_from_stale_memory():
    """Worker A has the key up to candle 40; the partition moves to B, which recovers A's state and goes
    on to candle 60; back on A, whose table recovers B's value. A's memory (at 40) is stale: A must
    continue from the table, exactly as an uninterrupted run."""
    stream = candles()
    uninterrupted = parsed_every_candle(stream)
    a = LiveStates({}, HISTORY, CONFIG)
    run(a, stream[:40])
    b = LiveStates({KEY: recovered(a.table[KEY])}, HISTORY, CONFIG)
    run(b, stream[40:60])
    a.table[KEY] = recovered(b.table[KEY])  # A's recovery after the partition came back
    assert run(a, stream[60:80]) == uninterrupted[60:80]
    assert a.loads == 1

    # The same recovery with unchanged content (the partition came back before anyone moved it on): a
    # new object in the table, read again, and nothing differs.
    a.table[KEY] = recovered(a.table[KEY])
    assert run(a, stream[80:]) == uninterrupted[80:]
    assert a.loads == 2


def test_a_key_gone_from_the_table_starts_afresh_as_the_table_says():
    stream = candles()
    states = LiveStates({}, HISTORY, CONFIG)
    run(states, stream[:30])
    del states.table[KEY]  # the partition is no longer this worker's: recovery dropped the key
    state = states.advance(KEY, stream[30])
    assert state is not None and list(state.candles) == [stream[30]]
    assert all(value is None for name, value in state.values.items() if name != "obv")


def test_a_candle_whose_forecasts_failed_is_moved_on_from_the_table_when_read_again():
    """The forecast fails between advance and save (the broker refused it): the table keeps the state
    before the candle, and the candle, read again, is forecast from there, not skipped as seen."""
    stream = candles()
    states = LiveStates({}, HISTORY, CONFIG)
    run(states, stream[:30])
    assert states.advance(KEY, stream[30]) is not None  # ... and no save
    assert run(states, stream[30:]) == parsed_every_candle(stream)[30:]
    assert states.loads == 1


def test_a_candle_is_forecast_ahead_only_right_after_a_saved_state_memory_holds():
    """What may be forecast before a candle's arrival (streams.ahead): the candle right after the newest
    of a state that is saved, not being moved on, and not replaced in the table by a recovery."""
    stream = candles()
    states = LiveStates({}, HISTORY, CONFIG)
    assert states.base_for(KEY, stream[0]) is None  # nothing yet
    run(states, stream[:30])
    assert states.base_for(KEY, stream[30]) is states.table[KEY]
    assert states.base_for(KEY, stream[31]) is None  # candle 30 is still to come: not from here
    state = states.advance(KEY, stream[30])
    assert state is not None and states.base_for(KEY, stream[31]) is None  # moved on, not saved yet
    states.save(KEY, state)
    assert states.base_for(KEY, stream[31]) is states.table[KEY]
    states.table[KEY] = recovered(states.table[KEY])  # a recovery put a new value in
    assert states.base_for(KEY, stream[31]) is None


def test_a_candle_seen_before_changes_nothing():
    stream = candles()
    states = LiveStates({}, HISTORY, CONFIG)
    run(states, stream[:30])
    before = states.table[KEY]
    assert states.advance(KEY, stream[29]) is None and states.advance(KEY, stream[3]) is None
    assert states.table[KEY] is before
    assert run(states, stream[30:]) == parsed_every_candle(stream)[30:]
    assert states.loads == 0


def test_a_value_python_json_writes_as_a_constant_survives_the_table():
    """A candle may carry an infinite volume (only positive or non-negative numbers are checked): the
    table value encodes it as Python's json did (Infinity), not as null, so it reads back."""
    stream = candles(10)
    stream[-1] = stream[-1].model_copy(update={"volume": math.inf})
    states = LiveStates({}, HISTORY, CONFIG)
    assert run(states, stream) == parsed_every_candle(stream)
    assert b"Infinity" in states.table[KEY]
    assert LiveState.load(states.table[KEY], HISTORY).candles[-1].volume == math.inf
    # Recovery decodes it with Faust's json codec, which takes the constants (orjson would not).
    from streams.prediction_agent import prediction_state

    changelog = prediction_state.changelog_topic
    recovered = changelog.app.serializers.loads_value(
        changelog.value_type, states.table[KEY], serializer=changelog.value_serializer
    )
    assert LiveState.load(recovered, HISTORY).candles[-1].volume == math.inf


def test_the_agents_table_sends_the_bytes_as_they_are_and_recovers_the_json_dict():
    """The prediction agent's Faust table: a bytes value goes to the changelog unserialised, and
    recovery decodes it into the dict the agent wrote before (which LiveState.load reads, as it reads
    the bytes themselves)."""
    from streams.prediction_agent import prediction_state

    stream = candles()
    states = LiveStates({}, HISTORY, CONFIG)
    run(states, stream)
    value = states.table[KEY]
    changelog = prediction_state.changelog_topic
    payload, _ = changelog.prepare_value(value, prediction_state.value_serializer)
    assert payload is value
    decoded = changelog.app.serializers.loads_value(
        changelog.value_type, payload, serializer=changelog.value_serializer
    )
    assert decoded == parsed_every_candle(stream)[-1]
    assert LiveState.load(decoded, HISTORY).indicators == LiveState.load(value, HISTORY).indicators
