"""The short fuzz run of `make test`: each atheris target for a few seconds from its committed corpus,
in a subprocess (libFuzzer exits the process when it finds a crash). The targets run side by side, so the
whole run takes about one target's time. The long run is `make fuzz` (docs/development.md#fuzzing)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

FUZZ_DIR = Path(__file__).resolve().parent
TARGETS = ("kraken_ws", "kraken_rest", "news_cryptopanic", "news_feed", "grpc_requests")
SECONDS = 3


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, tuple[subprocess.Popen[str], Path]]]:
    started = {}
    for target in TARGETS:
        out = tmp_path_factory.mktemp(target)
        (out / "corpus").mkdir()
        command = [
            sys.executable,
            str(FUZZ_DIR / f"{target}.py"),
            f"-max_total_time={SECONDS}",
            f"-artifact_prefix={out}/",
            str(out / "corpus"),
            str(FUZZ_DIR / "corpus" / target),
        ]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started[target] = (process, out)
    yield started
    for process, _ in started.values():
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.mark.parametrize("target", TARGETS)
def test_fuzzing_for_seconds_finds_no_crash(
    target: str, runs: dict[str, tuple[subprocess.Popen[str], Path]]
) -> None:
    process, out = runs[target]
    output, _ = process.communicate(timeout=120)
    findings = sorted(path.name for path in out.iterdir() if path.is_file())
    assert process.returncode == 0 and not findings, f"{target}: {findings}\n{output[-4000:]}"
    done = re.search(r"Done (\d+) runs", output)
    assert done and int(done.group(1)) > 0, output[-2000:]
