"""Who a gRPC caller is and how many prediction streams it may hold (grpc_server.server.StreamSlots)."""

from __future__ import annotations

import pytest

from grpc_server.server import StreamSlots, peer_host

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("peer", "host"),
    [
        ("ipv4:10.0.0.7:53122", "10.0.0.7"),
        ("ipv6:[::1]:53122", "::1"),
        ("ipv6:[2001:db8::5]:443", "2001:db8::5"),
        ("unix:/tmp/grpc.sock", "unix:/tmp/grpc.sock"),
    ],
)
def test_peer_host_drops_the_port(peer: str, host: str) -> None:
    assert peer_host(peer) == host


def test_a_caller_is_its_token_when_tokens_are_set_else_its_address() -> None:
    slots = StreamSlots(2, exempt_hosts=["10.0.0.9"], tokens=["alpha", "beta"])
    assert slots.caller("ipv4:10.0.0.7:1", [("authorization", "Bearer beta")]) == ("token #2", False)
    assert slots.caller("ipv4:10.0.0.7:1", [("authorization", b"Bearer alpha")]) == ("token #1", False)
    assert slots.caller("ipv4:10.0.0.7:2", None) == ("10.0.0.7", False)
    assert slots.caller("ipv4:10.0.0.9:2", [("authorization", "Bearer alpha")]) == ("token #1", True)


def test_the_bound_refuses_one_more_and_a_release_frees_a_slot() -> None:
    slots = StreamSlots(2)
    assert slots.take("a") and slots.take("a") and slots.take("b")
    assert not slots.take("a")
    assert slots.open == {"a": 2, "b": 1}
    slots.release("a")
    assert slots.take("a")
    assert slots.take("a", exempt=True)  # exempt callers are counted, never refused
    assert slots.open == {"a": 3, "b": 1}
    for _ in range(3):
        slots.release("a")
    slots.release("b")
    assert slots.open == {}
