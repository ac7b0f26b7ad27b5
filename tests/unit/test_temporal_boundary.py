"""The Temporal boundary's shape, read from the source: thin activities with one input model each,
scheduled by reference."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def activity_definitions() -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef]]:
    found = []
    for path in sorted((ROOT / "activities").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and any(
                "activity.defn" in ast.unparse(d) for d in node.decorator_list
            ):
                found.append((f"{path.name}::{node.name}", node))
    return found


# Activities that serve histories from before their input became one model; new runs never schedule them.
TWO_ARGUMENT_FORMS = {"build_training_dataset", "build_volatility_dataset", "backfill_trade_pages"}


def test_every_activity_is_thin_and_takes_one_input_model():
    definitions = activity_definitions()
    assert len(definitions) > 15
    for name, node in definitions:
        lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
        assert lines <= 40, f"{name} is {lines} lines: move its decisions into the core"
        inputs = [a.arg for a in node.args.args if a.arg != "self"]
        if node.name not in TWO_ARGUMENT_FORMS:
            assert len(inputs) == 1, f"{name} takes {inputs}: one input model per activity"


def test_workflows_schedule_activities_by_reference_not_by_name():
    for path in sorted((ROOT / "workflows").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func).startswith("workflow.execute_activity"):
                first = node.args[0] if node.args else None
                assert not isinstance(first, ast.Constant), (
                    f"{path.name}:{node.lineno} names an activity by string"
                )
