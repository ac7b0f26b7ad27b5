import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from cryptopredict.models import Candle, DeadLetter, Prediction, PredictionRefusal, Trade
from cryptopredict.settings import Settings

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_trade_json_round_trip():
    t = Trade(pair="BTC/USD", trade_id=1, price=1.5, qty=2, side="sell", timestamp=NOW, ingested_at=NOW)
    assert Trade.from_json(t.to_json_bytes()) == t


@pytest.mark.parametrize(
    "change",
    [{"price": 0}, {"qty": -1}, {"pair": "btcusd"}, {"side": "hold"}, {"timestamp": datetime(2026, 1, 1)}],
)
def test_trade_rejects_bad_fields(change):
    fields = dict(pair="BTC/USD", trade_id=1, price=1.5, qty=2, side="sell", timestamp=NOW, ingested_at=NOW)
    with pytest.raises(ValidationError):
        Trade(**(fields | change))


def test_candle_requires_consistent_ohlc_and_gap_flag():
    fields = dict(
        pair="BTC/USD",
        interval_s=60,
        window_start=NOW,
        window_end=NOW + timedelta(minutes=1),
        open=10,
        high=12,
        low=9,
        close=11,
        volume=1,
        vwap=10.5,
        trade_count=3,
    )
    Candle(**fields)
    with pytest.raises(ValidationError):
        Candle(**(fields | {"high": 10.5}))
    with pytest.raises(ValidationError):
        Candle(**(fields | {"gap": True}))


def test_prediction_rejects_extra_fields():
    with pytest.raises(ValidationError):
        Prediction.model_validate({"pair": "BTC/USD", "unexpected": 1})


@pytest.mark.parametrize("model", [Prediction, PredictionRefusal])
@pytest.mark.parametrize("field", ["interval_s", "horizon_s"])
def test_prediction_seconds_fit_the_wire_int64(model, field):
    """Beyond int64 the gRPC encoder (and the store) cannot hold the number: refused at validation,
    as the stream edge refuses it, instead of failing the server's consumer."""
    with pytest.raises(ValidationError, match="less than or equal to 9223372036854775807"):
        model.model_validate({field: 2**63})


def test_settings_nested_env(monkeypatch):
    monkeypatch.setenv("CRYPTOPREDICT_KAFKA__BOOTSTRAP_SERVERS", "broker:29092")
    monkeypatch.setenv("CRYPTOPREDICT_TEMPORAL__ADDRESS", "temporal.example:7233")
    monkeypatch.setenv("CRYPTOPREDICT_KRAKEN__PAIRS", '["BTC/USD","ETH/USD"]')
    monkeypatch.setenv("CRYPTOPREDICT_POSTGRES__URL", "postgresql://u:p@db:6543/fs")
    s = Settings()
    assert s.kafka.first_host_port == ("broker", 29092)
    assert s.temporal.host_port == ("temporal.example", 7233)
    assert s.kraken.pairs == ["BTC/USD", "ETH/USD"]
    assert s.postgres.port == 6543 and s.postgres.database == "fs"
    assert s.postgres.async_url == "postgresql+asyncpg://u:p@db:6543/fs"
    assert s.postgres.mlflow_backend_uri == "postgresql+psycopg://u:p@db:6543/mlflow"


def test_a_dead_letters_store_key_is_its_content():

    at = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=UTC)
    letter = DeadLetter(source="candle_builder", reason="invalid", raw="{x", at=at)
    assert DeadLetter.model_validate_json(letter.to_json_bytes()).store_key() == letter.store_key()
    # The digest migration 0006 computes in SQL for rows stored before it.
    assert (
        letter.store_key()
        == hashlib.sha256(b"candle_builder\x1finvalid\x1f{x\x1f1767225600123456").hexdigest()
    )
    for change in ({"source": "x"}, {"reason": "x"}, {"raw": "{y"}, {"at": at.replace(microsecond=123457)}):
        assert letter.model_copy(update=change).store_key() != letter.store_key()


def test_a_dead_letter_holds_no_nul_character():
    # PostgreSQL text refuses NUL; the letter keeps it visible as an escape instead.
    letter = DeadLetter.model_validate_json(
        b'{"source": "trade_feed", "reason": "bad\\u0000", "raw": "{\\"x\\": \\"\\u0000\\"}", "at": "2026-01-01T00:00:00Z"}'
    )
    assert "\x00" not in letter.reason + letter.raw
    assert letter.raw == '{"x": "\\u0000"}' and letter.reason == "bad\\u0000"


def test_forecast_targets_span_every_interval_and_the_retrain_budget_spreads_the_schedules():
    from cryptopredict.orchestration import retrain_every_s

    settings = Settings(
        kraken={"pairs": ["BTC/USD", "ETH/USD"]},
        model={"horizons_candles": [1, 5], "horizons_by_interval": {3600: [1, 6, 24]}},
    )
    assert settings.forecast_targets() == [
        (pair, interval, horizon)
        for pair in ("BTC/USD", "ETH/USD")
        for interval, horizon in ((60, 1), (60, 5), (3600, 1), (3600, 6), (3600, 24))
    ]
    # 10 targets x 2 kinds = 20 schedules: within 24 a day, the daily schedule stands; within 10, not.
    assert retrain_every_s(settings, 20) == 86_400
    tight = settings.model_copy(
        update={"model": settings.model.model_copy(update={"max_retrains_per_day": 10})}
    )
    assert retrain_every_s(tight, 20) == 2 * 86_400
    with pytest.raises(ValidationError, match="have no candles"):
        Settings(model={"horizons_by_interval": {900: [1]}})
    with pytest.raises(ValidationError, match=r"repeats features\.interval_s"):
        Settings(model={"horizons_by_interval": {60: [5]}})
