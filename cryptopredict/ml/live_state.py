"""The prediction agent's state of each key (a market and interval) kept parsed in memory between candles.

The state is the recent candles and the indicator state. Its recovery copy is a changelogged table
(any mapping here), written after every candle, as the JSON
`{"candles": [Candle.model_dump(mode="json"), ...], "indicators": IndicatorState.model_dump(mode="json")}`.
Nothing that has not changed is parsed or serialised again:
- the parsed state of a key is used as long as the table still holds the very value it was saved as
  (compared by identity). A restart, or a partition handed away and back, leaves in the table a value
  recovered from the changelog (another object) or none, and the key is then loaded from the table
  again: memory is never staler than the table, which stays the authority.
- the table gets the state as JSON bytes, joined from each candle's JSON encoded once when the candle
  arrived; a Faust table sends bytes to its changelog as they are, and recovery decodes them into that
  dict (LiveState.load reads either).
A state taken out to be moved on by a candle is back in memory only once saved: a forecast that fails in
between leaves the table behind it, and the candle, read again, starts from the table.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json

from cryptopredict.features.indicators import IndicatorConfig, IndicatorState
from cryptopredict.models import Candle


# Faust's json codec reads these constants back only while orjson is not installed (with it, Faust
# switches to orjson.loads, which refuses NaN and infinities); tests/unit/test_live_state.py recovers such
# a value through the agent's table codec, so installing orjson would fail there first.
def _encoded(json_data: dict[str, Any]) -> bytes:
    """JSON of model_dump(mode="json") output, as json.loads reads it back: NaN and infinities as the
    constants Python's json writes (a model's own model_dump_json would write null), in a third of
    json.dumps' time."""
    return to_json(json_data, inf_nan_mode="constants")


@dataclass
class LiveState:
    """The candles (at most `history`, oldest first) and indicator state of one key, and the indicator
    values at its newest candle."""

    candles: deque[Candle]
    encoded: deque[bytes]  # each candle's JSON, in step with `candles`
    indicators: IndicatorState
    values: dict[str, float | None] = field(default_factory=dict)
    saved_as: object = None  # the table value this state was last saved as, or loaded from

    @classmethod
    def new(cls, candle: Candle, history: int, config: IndicatorConfig) -> LiveState:
        indicators = IndicatorState.new(candle.market, candle.interval_s, config)
        return cls(deque(maxlen=history), deque(maxlen=history), indicators)

    @classmethod
    def load(cls, stored: Any, history: int) -> LiveState:
        """The state from a table value: the JSON dict (recovered from the changelog) or its bytes."""
        value = json.loads(stored) if isinstance(stored, bytes | bytearray) else stored
        candles = value["candles"]
        return cls(
            deque((Candle.model_validate(c) for c in candles), maxlen=history),
            deque((_encoded(c) for c in candles), maxlen=history),
            IndicatorState.model_validate(value["indicators"]),
            saved_as=stored,
        )

    def push(self, candle: Candle) -> bool:
        """Moves the state on by `candle`; False (nothing changed) for a candle at or before the newest
        one: a redelivery after a restart, whose forecasts were acknowledged."""
        try:
            self.values = self.indicators.update(candle).values
        except ValueError:
            return False
        self.candles.append(candle)
        self.encoded.append(_encoded(candle.model_dump(mode="json")))
        return True

    def to_json_bytes(self) -> bytes:
        indicators = _encoded(self.indicators.model_dump(mode="json"))
        return b'{"candles":[' + b",".join(self.encoded) + b'],"indicators":' + indicators + b"}"


class LiveStates:
    """The LiveState of every key, over `table` (the changelogged recovery copy and the authority)."""

    def __init__(self, table: MutableMapping[str, Any], history: int, config: IndicatorConfig) -> None:
        self.table = table
        self.history = history
        self.config = config
        self._parsed: dict[str, LiveState] = {}
        self.loads = 0  # states parsed from the table (a restart, a hand-over, a failed candle)

    def base_for(self, key: str, candle: Candle) -> object | None:
        """The table value `candle` would move the key on from, when memory holds that very value (saved,
        and not being moved on) and `candle` is the one right after its newest; else None. What may be
        forecast before the candle's arrival (streams.ahead)."""
        state = self._parsed.get(key)
        if state is None or state.saved_as is None or self.table.get(key) is not state.saved_as:
            return None
        return state.saved_as if state.candles[-1].window_end == candle.window_start else None

    def advance(self, key: str, candle: Candle) -> LiveState | None:
        """The key's state moved on by `candle`, to be saved once its forecasts are out; None for a
        candle seen before (the state is unchanged)."""
        stored = self.table.get(key)
        state = self._parsed.pop(key, None)
        if state is None or stored is None or stored is not state.saved_as:
            state = self._load(stored, candle)
        if not state.push(candle):
            self._parsed[key] = state  # still what the table holds
            return None
        return state

    def save(self, key: str, state: LiveState) -> None:
        """Writes the state to the table and keeps it in memory as the table's current value."""
        value = state.to_json_bytes()
        self.table[key] = value
        state.saved_as = value
        self._parsed[key] = state

    def _load(self, stored: Any, candle: Candle) -> LiveState:
        if stored is None:
            return LiveState.new(candle, self.history, self.config)
        self.loads += 1
        return LiveState.load(stored, self.history)
