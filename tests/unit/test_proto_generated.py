"""The committed code in grpc_server/pb/ is exactly what protos/generate.py produces from the .proto."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def load_generator() -> ModuleType:
    # protos/ is not a package; load the script by path.
    spec = importlib.util.spec_from_file_location("protos_generate", REPO / "protos" / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_code_matches_regenerated(tmp_path: Path) -> None:
    generator = load_generator()
    written = generator.generate(tmp_path)
    assert sorted(p.name for p in written) == sorted(generator.GENERATED)
    for path in written:
        committed = REPO / "grpc_server" / "pb" / path.name
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} is stale: run `python protos/generate.py`"
        )


def test_generated_grpc_module_imports_relatively() -> None:
    text = (REPO / "grpc_server" / "pb" / "predictions_pb2_grpc.py").read_text()
    assert "from . import predictions_pb2" in text
    assert "from cryptopredict.v1" not in text


def test_descriptor_file_name_is_relative_to_protos() -> None:
    from grpc_server.pb import predictions_pb2

    assert predictions_pb2.DESCRIPTOR.name == "cryptopredict/v1/predictions.proto"
    assert predictions_pb2.DESCRIPTOR.package == "cryptopredict.v1"
