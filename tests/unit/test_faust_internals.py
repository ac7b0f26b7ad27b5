"""The private Faust and mode state streams/faust_internals.py reads or patches is still there in the
pinned versions: a Faust upgrade that renames one fails here, naming it, instead of silently disarming
the stream guard (Faust's test_context skips the consumer, so no agent test would notice)."""

from __future__ import annotations

import inspect

import pytest

from streams.faust_internals import PRIVATE_ATTRIBUTES

pytestmark = pytest.mark.unit


def present(owner: type, attribute: str) -> bool:
    """Defined on the class, or assigned to `self` in its code (an instance attribute)."""
    if hasattr(owner, attribute):
        return True
    return any(f"self.{attribute} =" in inspect.getsource(cls) for cls in owner.__mro__ if cls is not object)


@pytest.mark.parametrize(("owner", "attribute"), PRIVATE_ATTRIBUTES, ids=lambda x: getattr(x, "__name__", x))
def test_every_private_attribute_the_guard_touches_exists(owner: type, attribute: str) -> None:
    assert present(owner, attribute), f"{owner.__module__}.{owner.__qualname__}.{attribute} is gone"


def test_the_canary_fails_for_an_attribute_that_does_not_exist() -> None:
    owner, _ = PRIVATE_ATTRIBUTES[0]
    assert not present(owner, "_renamed_in_a_later_release")


def test_no_other_module_touches_faust_private_state() -> None:
    """Every private Faust attribute is read through faust_internals, nowhere else in streams/."""
    from pathlib import Path

    names = {attribute for _, attribute in PRIVATE_ATTRIBUTES if attribute.startswith("_")}
    streams = Path(__file__).resolve().parents[2] / "streams"
    for path in streams.glob("*.py"):
        if path.name == "faust_internals.py":
            continue
        text = path.read_text()
        used = sorted(name for name in names if f".{name}" in text)
        assert not used, f"{path.name} touches {used}: go through streams/faust_internals.py"
