from datetime import UTC, datetime, timedelta

import pytest

from cryptopredict.features.candles import CandleState, window_start
from cryptopredict.models import Trade

pytestmark = pytest.mark.unit

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def trade(trade_id: int, seconds: float, price: float, qty: float = 1.0) -> Trade:
    ts = T0 + timedelta(seconds=seconds)
    return Trade(
        pair="BTC/USD", trade_id=trade_id, price=price, qty=qty, side="buy", timestamp=ts, ingested_at=ts
    )


def state(grace_s: float = 5.0) -> CandleState:
    return CandleState(pair="BTC/USD", interval_s=60, grace_s=grace_s)


def test_window_start_aligns_on_event_time():
    assert window_start(T0 + timedelta(seconds=119.9), 60) == T0 + timedelta(seconds=60)


def test_candle_closes_only_after_window_end_plus_grace():
    s = state()
    assert s.add_trade(trade(1, 10, 100.0, 2.0)) == ([], "accepted")
    assert s.add_trade(trade(2, 30, 110.0, 1.0)) == ([], "accepted")
    assert s.add_trade(trade(3, 64, 105.0))[0] == []  # inside grace: still open
    closed, outcome = s.add_trade(trade(4, 65, 104.0))
    assert outcome == "accepted"
    assert len(closed) == 1
    c = closed[0]
    assert (c.open, c.high, c.low, c.close) == (100.0, 110.0, 100.0, 110.0)
    assert c.volume == 3.0 and c.trade_count == 2
    assert c.vwap == pytest.approx((100 * 2 + 110) / 3)
    assert (c.first_trade_id, c.last_trade_id) == (1, 2)


def test_late_trade_within_grace_counts_and_later_is_rejected():
    s = state()
    s.add_trade(trade(1, 10, 100.0))
    s.add_trade(trade(3, 62, 101.0))
    s.add_trade(trade(2, 59, 99.0))  # late but within grace: lands in the first window
    closed, _ = s.add_trade(trade(4, 70, 102.0))
    assert closed[0].close == 99.0 and closed[0].trade_count == 2
    assert s.add_trade(trade(5, 20, 98.0)) == ([], "late")


def test_out_of_order_trades_do_not_change_open_and_close():
    s = state()
    s.add_trade(trade(2, 20, 101.0))
    s.add_trade(trade(3, 40, 102.0))
    s.add_trade(trade(1, 5, 100.0))
    closed, _ = s.add_trade(trade(9, 200, 1.0))
    assert (closed[0].open, closed[0].close) == (100.0, 102.0)


def test_missing_windows_become_gap_candles():
    s = state()
    s.add_trade(trade(1, 10, 100.0))
    s.add_trade(trade(2, 190, 101.0))  # closes minute 0
    closed, _ = s.add_trade(trade(3, 300, 102.0))  # closes minute 3; minutes 1 and 2 had no trades
    assert [c.gap for c in closed] == [True, True, False]
    assert [c.window_start for c in closed] == [T0 + timedelta(minutes=m) for m in (1, 2, 3)]
    assert closed[0].close == 100.0 and closed[0].volume == 0 and closed[0].trade_count == 0


def test_idle_check_closes_a_quiet_window_from_wall_clock_progress():
    s = state()
    s.add_trade(trade(1, 10, 100.0))
    assert s.close_idle(T0 + timedelta(seconds=30)) == []
    closed = s.close_idle(T0 + timedelta(seconds=66))
    assert len(closed) == 1 and closed[0].close == 100.0


def test_state_survives_a_json_round_trip():
    s = state()
    s.add_trade(trade(1, 10, 100.0))
    restored = CandleState.model_validate_json(s.model_dump_json())
    assert restored == s
    closed, _ = restored.add_trade(trade(2, 80, 101.0))
    assert closed[0].open == 100.0


def test_a_repeated_trade_id_counts_once():
    s = state()
    s.add_trade(trade(1, 10, 100.0, 2.0))
    assert s.add_trade(trade(1, 10, 100.0, 2.0)) == ([], "duplicate")
    closed, _ = s.add_trade(trade(2, 70, 101.0))
    assert closed[0].volume == 2.0 and closed[0].trade_count == 1


def test_id_runs_stay_compact_and_catch_every_repeat():
    import random

    from cryptopredict.features.candles import add_to_runs

    runs: list[list[int]] = []
    ids = list(range(1, 500))
    random.Random(3).shuffle(ids)
    assert all(add_to_runs(runs, i) for i in ids)
    assert runs == [[1, 499]]
    assert not any(add_to_runs(runs, i) for i in (1, 250, 499))
    assert add_to_runs(runs, 600) and runs == [[1, 499], [600, 600]]


def test_a_replayed_trade_of_a_closed_window_is_a_duplicate_and_a_new_one_is_late():
    # After a restart or a hand-over the restored state can be ahead of the committed offset: the trades
    # read again must not land on the late-trades topic as if the exchange had sent them late.
    s = state()
    for trade_id, second in ((1, 10), (2, 20), (3, 70), (4, 130)):
        s.add_trade(trade(trade_id, second, 100.0))
    assert s.last_closed_start == T0 + timedelta(seconds=60)
    assert s.add_trade(trade(2, 20, 100.0)) == ([], "duplicate")
    assert s.add_trade(trade(3, 70, 100.0)) == ([], "duplicate")
    assert s.add_trade(trade(9, 30, 100.0)) == ([], "late")
    assert s.closed_trade_ids == [[1, 3]]
    restored = CandleState.model_validate_json(s.model_dump_json())
    assert restored.add_trade(trade(1, 10, 100.0)) == ([], "duplicate")


def test_closed_id_runs_are_merged_and_bounded():
    from cryptopredict.features.candles import merge_runs

    assert merge_runs([[1, 5], [9, 9]], [[6, 8], [12, 14]], keep=10) == [[1, 9], [12, 14]]
    assert merge_runs([[1, 2], [4, 5]], [[7, 8]], keep=2) == [[4, 5], [7, 8]]
    assert merge_runs([], [], keep=3) == []
