"""Topic prefixes of this test session: each isolated run (its own topics, Faust app and consumer group)
takes one here, and a session that passed deletes the topics under them (tests/conftest.py)."""

from __future__ import annotations

import uuid

made: list[str] = []


def run_prefix(name: str) -> str:
    prefix = f"{name}-{uuid.uuid4().hex[:8]}-"
    made.append(prefix)
    return prefix
