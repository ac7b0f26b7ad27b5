"""Runs one atheris target: `python tests/fuzz/<target>.py [libFuzzer flags] [corpus dirs or files]`.

Without corpus arguments the fuzzer starts from the committed seeds in corpus/<target>/ and keeps what it
finds in out/<target>/corpus/ (not committed); crash, timeout and leak inputs land in out/<target>/.
Given files instead of directories, libFuzzer runs just those inputs once (a crash reproduction).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

FUZZ_DIR = Path(__file__).resolve().parent
SEEDS = FUZZ_DIR / "corpus"
OUT = FUZZ_DIR / "out"
# A parser that needs this long for one input hangs the feed as surely as a crash stops it.
DEFAULT_FLAGS = ("-timeout=10", "-rss_limit_mb=2048")


def run(target: str, check: Callable[[bytes], object]) -> None:
    flags = [arg for arg in sys.argv[1:] if arg.startswith("-")]
    paths = [arg for arg in sys.argv[1:] if not arg.startswith("-")]
    out = OUT / target
    if not paths:
        (out / "corpus").mkdir(parents=True, exist_ok=True)
        paths = [str(out / "corpus"), str(SEEDS / target)]
    if not any(flag.startswith("-artifact_prefix=") for flag in flags):
        out.mkdir(parents=True, exist_ok=True)
        flags.append(f"-artifact_prefix={out}/")
    for default in DEFAULT_FLAGS:
        if not any(flag.startswith(default.split("=")[0] + "=") for flag in flags):
            flags.append(default)

    # The parsers log what they reject; at thousands of inputs a second that is all the output would be.
    logging.disable(logging.CRITICAL)

    def test_one_input(data: bytes) -> None:
        check(data)

    atheris.Setup([sys.argv[0], *flags, *paths], test_one_input)
    atheris.Fuzz()
