"""The stream edge reads the predictions topic itself, so it must never serve a record the Python server
refuses, and must send the bytes the server would. A corpus of records goes through both: through
`Prediction.model_validate_json` and `prediction_response_bytes` here, and through the edge's own decoder
(infra/stream-edge/prediction.go) in its Go test `TestTheDecoderAgreesWithPython`, which reads the corpus
this test writes. Every record the edge accepts, the server accepts with byte-identical encoding; every
record the real model made, the edge accepts; the raw record of the edge's dead letter for any record is
the one the Python stages would write."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from factories import T0, prediction, with_uncertainty
from pydantic import ValidationError

from cryptopredict.models.ml import Prediction, QuantilePrice
from cryptopredict.stack.base import find_cmd
from grpc_server.convert import prediction_response_bytes
from grpc_server.pb import predictions_pb2 as pb

pytestmark = pytest.mark.unit

EDGE = Path(__file__).resolve().parents[2] / "infra" / "stream-edge"
DROP = object()  # a field left out of a mutated record


FULL = with_uncertainty(prediction(exchange="coinbase"))


def valid_records() -> dict[str, bytes]:
    """Records of the real model: how the prediction agent writes them, and how older producers did
    (without the fields that have defaults)."""
    predictions = {
        "plain": prediction(),
        "full": FULL,
        "full on kraken": with_uncertainty(prediction(), "calm"),
        "full on binance": with_uncertainty(prediction(exchange="binance", pair="BTC/USDT"), "wild"),
        "interval only": prediction(lower_price=63_900.0, upper_price=64_100.75, interval_level=0.9),
        "quantiles only": prediction(quantiles=[QuantilePrice(level=0.05, price=1.0)]),
        "equal quantile prices": prediction(
            quantiles=[QuantilePrice(level=0.25, price=2.0), QuantilePrice(level=0.75, price=2.0)]
        ),
        "volatility 0, no regime": prediction(predicted_volatility=0.0),
        "regime, no volatility": prediction(volatility_regime="wild"),
        "whole seconds": prediction(made_at=T0 + timedelta(seconds=2)),
        "the epoch": prediction(feature_time=datetime(1970, 1, 1, tzinfo=UTC)),
        "before the epoch": prediction(made_at=datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        "year 1": prediction(feature_time=datetime(1, 1, 1, tzinfo=UTC)),
        "year 9999": prediction(target_time=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        "tiny and huge prices": prediction(last_price=5e-324, predicted_price=1.7976931348623157e308),
        "awkward decimals": prediction(last_price=0.1, predicted_price=123456789.123456789),
        "big interval": prediction(interval_s=2**62, horizon_s=2**63 - 1),
        "empty pair and names": prediction(pair="", model_name="", model_version=""),
        "namespaced pair": prediction(pair="test.E1A2B3/USD"),
        "unicode": prediction(model_name="modèle 😀", model_version="v\u0000\u001f\u2028"),
    }
    records = {name: p.to_json_bytes() for name, p in predictions.items()}
    records |= {
        f"{name}, defaults left out": p.model_dump_json(exclude_defaults=True).encode()
        for name, p in predictions.items()
    }
    records["indented"] = FULL.model_dump_json(indent=2).encode()
    return records


def edited(record: Prediction, **changes: Any) -> bytes:
    doc = json.loads(record.to_json_bytes())
    for name, value in changes.items():
        if value is DROP:
            doc.pop(name, None)
        else:
            doc[name] = value
    return json.dumps(doc).encode()


def raw_edit(record: Prediction, old: str, new: str) -> bytes:
    text = record.model_dump_json()
    assert old in text, (old, text)
    return text.replace(old, new, 1).encode()


def mutations() -> dict[str, bytes]:
    """Records that are not what the model writes: broken, or odd but maybe acceptable to pydantic."""
    full = FULL
    required = [name for name, field in Prediction.model_fields.items() if field.is_required()]
    records = {f"no {name}": edited(full, **{name: DROP}) for name in required}
    records |= {f"{name} null": edited(full, **{name: None}) for name in Prediction.model_fields}
    wrong_types: list[Any] = ["60", "64000.5", 60, 60.0, 64000.5, True, [], {}, [1], {"a": 1}]
    for name in Prediction.model_fields:
        for n, value in enumerate(wrong_types):
            records[f"{name} as {value!r} ({n})"] = edited(full, **{name: value})
    records |= {
        "an extra field": edited(full, surprise=1),
        "an extra quantile field": edited(full, quantiles=[{"level": 0.5, "price": 1.0, "x": 1}]),
        "a quantile without a price": edited(full, quantiles=[{"level": 0.5}]),
        "a quantile as a list": edited(full, quantiles=[[0.5, 1.0]]),
        "price 0": edited(full, last_price=0),
        "price -1": edited(full, predicted_price=-1.0),
        "price -0.0": edited(full, last_price=-0.0),
        "price underflows to 0": raw_edit(full, '"last_price":64000.5', '"last_price":1e-400'),
        "price 1e999": raw_edit(full, '"last_price":64000.5', '"last_price":1e999'),
        "price NaN": raw_edit(full, '"last_price":64000.5', '"last_price":NaN'),
        "price Infinity": raw_edit(full, '"last_price":64000.5', '"last_price":Infinity'),
        "volatility -Infinity": raw_edit(
            full, '"predicted_volatility":0.0007', '"predicted_volatility":-Infinity'
        ),
        "volatility -0.0": edited(full, predicted_volatility=-0.0),
        "volatility -1e-400": raw_edit(
            full, '"predicted_volatility":0.0007', '"predicted_volatility":-1e-400'
        ),
        "volatility negative": edited(full, predicted_volatility=-0.1),
        "price as an integer": edited(full, last_price=64000),
        "price as a huge integer": raw_edit(
            full, '"last_price":64000.5', '"last_price":123456789012345678901234567890'
        ),
        "price with a long mantissa": raw_edit(
            full,
            '"last_price":64000.5',
            '"last_price":1.00000000000000011102230246251565404236316680908203125',
        ),
        "price with an exponent": raw_edit(full, '"last_price":64000.5', '"last_price":6.40005E4'),
        "interval 0": edited(full, interval_s=0),
        "horizon negative": edited(full, horizon_s=-300),
        "interval 2**63": raw_edit(full, '"interval_s":60', '"interval_s":9223372036854775808'),
        "interval 6e1": raw_edit(full, '"interval_s":60', '"interval_s":6e1'),
        "interval -0": raw_edit(full, '"interval_s":60', '"interval_s":-0'),
        "interval level 0": edited(full, interval_level=0),
        "interval level 1": edited(full, interval_level=1),
        "quantile level 0": edited(full, quantiles=[{"level": 0, "price": 1.0}]),
        "quantile level 1": edited(full, quantiles=[{"level": 1, "price": 1.0}]),
        "quantile price 0": edited(full, quantiles=[{"level": 0.5, "price": 0}]),
        "unordered quantiles": edited(
            full, quantiles=[{"level": 0.9, "price": 2.0}, {"level": 0.1, "price": 1.0}]
        ),
        "repeated quantile level": edited(
            full, quantiles=[{"level": 0.5, "price": 1.0}, {"level": 0.5, "price": 1.0}]
        ),
        "decreasing quantile prices": edited(
            full, quantiles=[{"level": 0.1, "price": 2.0}, {"level": 0.9, "price": 1.0}]
        ),
        "unknown exchange": edited(full, exchange="ftx"),
        "exchange in capitals": edited(full, exchange="KRAKEN"),
        "unknown regime": edited(full, volatility_regime="stormy"),
        "empty regime": edited(full, volatility_regime=""),
        "not JSON": b"not json",
        "empty value": b"",
        "whitespace": b"  \n",
        "truncated": full.to_json_bytes()[:-1],
        "trailing junk": full.to_json_bytes() + b"x",
        "trailing whitespace": full.to_json_bytes() + b" \r\n\t",
        "an array": b"[" + full.to_json_bytes() + b"]",
        "a string": b'"prediction"',
        "a BOM": b"\xef\xbb\xbf" + full.to_json_bytes(),
        "invalid UTF-8": raw_edit(full, '"mid"', '"m\xffd"').replace(b"\xc3\xbf", b"\xff"),
        # One U+FFFD per maximal subpart of each ill-formed sequence, in a dead letter's raw record.
        **{
            f"ill-formed UTF-8 {bad!r}": full.to_json_bytes().replace(b'"mid"', b'"m' + bad + b'd"')
            for bad in (
                b"\xff\xfe",
                b"\xe2\x82",
                b"\xf0\x9f\x98",
                b"\xc0\xaf",
                b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80",
                b"\xe0\x80\x80",
                b"\x80\xbf",
                b"\xe1\x80\xe1\x80\x80",
                b"\xef\xbf\xbd\xf5",
                b"\xf1\x80\x80",
            )
        },
        "latin-1": json.dumps(
            {**json.loads(full.to_json_bytes()), "model_name": "modèle"}, ensure_ascii=False
        ).encode("latin-1"),
        "lone surrogate": raw_edit(full, '"mid"', '"\\ud800"'),
        "lone low surrogate": raw_edit(full, '"7"', '"\\udc00"'),
        "escaped surrogate pair": raw_edit(full, '"7"', '"\\ud83d\\ude00"'),
        "escaped slash and unicode": raw_edit(full, '"7"', '"\\/\\u00e9\\u0000"'),
        "raw tab in a string": raw_edit(full, '"7"', '"a\tb"'),
        "duplicate key": full.to_json_bytes()[:-1] + b', "pair": "ETH/USD"}',
        "nested deep": b"[" * 200 + b"]" * 200,
        "leading zero": raw_edit(full, '"interval_s":60', '"interval_s":060'),
        "plus sign": raw_edit(full, '"interval_s":60', '"interval_s":+60'),
        "unix time": edited(full, made_at=1714564801),
        "unix time as a string": edited(full, made_at="1714564801"),
    }
    made_at = "2024-05-01T12:00:01.123456Z"
    for label, text in {
        "naive": "2024-05-01T12:00:01.123456",
        "a date": "2024-05-01",
        "+01:00": "2024-05-01T13:00:01.123456+01:00",
        "-05:30": "2024-05-01T06:30:01.123456-05:30",
        "-00:00": "2024-05-01T12:00:01.123456-00:00",
        "+23:59": "2024-05-02T11:59:01.123456+23:59",
        "+24:00": "2024-05-01T12:00:01+24:00",
        "+0100": "2024-05-01T13:00:01+0100",
        "+01": "2024-05-01T13:00:01+01",
        "lower z": "2024-05-01T12:00:01z",
        "lower t": "2024-05-01t12:00:01Z",
        "space": "2024-05-01 12:00:01Z",
        "no seconds": "2024-05-01T12:00Z",
        "comma": "2024-05-01T12:00:01,5Z",
        "7 fraction digits": "2024-05-01T12:00:01.1234567Z",
        "9 fraction digits": "2024-05-01T12:00:01.123456789Z",
        "10 fraction digits": "2024-05-01T12:00:01.1234567891Z",
        "1 fraction digit": "2024-05-01T12:00:01.1Z",
        "leap second": "2024-05-01T23:59:60Z",
        "hour 24": "2024-05-01T24:00:00Z",
        "30 February": "2024-02-30T00:00:00Z",
        "29 February 2023": "2023-02-29T00:00:00Z",
        "29 February 2024": "2024-02-29T00:00:00Z",
        "year 0": "0000-01-01T00:00:00Z",
        "year 1 at +01:00": "0001-01-01T00:30:00+01:00",
        "year 9999 at -01:00": "9999-12-31T23:30:00-01:00",
        "trailing space": "2024-05-01T12:00:01Z ",
    }.items():
        records[f"made_at {label}"] = raw_edit(full, f'"made_at":"{made_at}"', f'"made_at":"{text}"')
    return records


def python_encoding(value: bytes) -> str:
    """What the server does with a record: the hex of the response it would send; "" when it refuses it
    or cannot encode it (a number beyond int64 passes pydantic, then fails the protobuf encoder)."""
    try:
        return prediction_response_bytes(Prediction.model_validate_json(value)).hex()
    except (ValidationError, ValueError):
        return ""


def test_the_full_record_sets_every_field_of_the_model_and_the_message() -> None:
    # A field added to the model or the .proto must reach this corpus, or the edge would not meet it.
    assert FULL.model_fields_set == set(Prediction.model_fields)
    message = pb.StreamPredictionsResponse.FromString(prediction_response_bytes(FULL)).prediction
    assert {f.name for f, _ in message.ListFields()} == set(pb.Prediction.DESCRIPTOR.fields_by_name)


def test_the_edge_decodes_records_as_the_server_does(tmp_path: Path) -> None:
    valid, mutated = valid_records(), mutations()
    assert all(python_encoding(v) for v in valid.values())
    corpus = tmp_path / "corpus.jsonl"
    with corpus.open("w") as out:
        for names, is_valid in ((valid, True), (mutated, False)):
            for name, value in names.items():
                line = {
                    "name": name,
                    "value": base64.b64encode(value).decode(),
                    "python": python_encoding(value),
                    "valid": is_valid,
                    "raw": value.decode("utf-8", "replace"),  # as the Python stages write dead letters
                }
                out.write(json.dumps(line) + "\n")
    go = find_cmd([Path("/usr/local/go/bin/go")], "go")
    env = {
        **os.environ,
        "GOFLAGS": "-mod=readonly",
        "GOTOOLCHAIN": "local",
        "EDGE_PREDICTION_CORPUS": str(corpus),
    }
    result = subprocess.run(
        [str(go), "test", "-count=1", "-v", "-run", "^TestTheDecoderAgreesWithPython$", "."],
        cwd=EDGE,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--- PASS: TestTheDecoderAgreesWithPython" in result.stdout, result.stdout
