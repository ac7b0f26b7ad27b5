"""The stream edge's own Go tests (infra/stream-edge/*_test.go): its hub (snapshot, order, drop-oldest,
drain, streams ended when the server goes), what the server vouched for, its reading of requests, its
decoding of records, dead letters, catching up, health, metrics and Kafka options. No services."""

import os
import subprocess
from pathlib import Path

import pytest

from cryptopredict.stack.base import find_cmd

pytestmark = pytest.mark.unit

EDGE = Path(__file__).resolve().parents[2] / "infra" / "stream-edge"


def test_the_stream_edge_go_tests_pass():
    go = find_cmd([Path("/usr/local/go/bin/go")], "go")
    env = {**os.environ, "GOFLAGS": "-mod=readonly", "GOTOOLCHAIN": "local"}
    result = subprocess.run(
        [str(go), "test", "-count=1", "./..."], cwd=EDGE, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout
