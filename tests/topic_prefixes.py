"""The test session's namespace `test`, as a demo's is `demo` (docs/operations.md#namespaces-demo-and-test-runs-beside-live-targets):
each isolated run takes a topic prefix here (its own topics, Faust app and consumer group) and each test
its own pairs, so a test never writes a live target's rows, topics or models. A session that passed
deletes the topics under its prefixes (tests/conftest.py); `cryptopredict clean test --yes` removes the
rest of what test sessions left."""

from __future__ import annotations

import uuid

from cryptopredict.topics import namespace_topic_prefix, namespaced_pair

NAMESPACE = "test"
made: list[str] = []


def run_prefix(name: str) -> str:
    prefix = f"{namespace_topic_prefix(NAMESPACE)}{name}-{uuid.uuid4().hex[:8]}-"
    made.append(prefix)
    return prefix


def session_pair(letters: str) -> str:
    """A pair of this session no other test uses: `test.<letters><5 hex digits>/USD`."""
    return namespaced_pair(f"{letters}{uuid.uuid4().hex[:5].upper()}/USD", NAMESPACE)
