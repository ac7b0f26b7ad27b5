"""Fault drills of the whole pipeline (`cryptopredict drill`) and the harness the stream and cluster
drills share. Not part of the core: it starts processes and stops stack components."""

from cryptopredict.drill.harness import (
    DrillFailure,
    Run,
    assert_same_as_uninterrupted,
    assert_store_holds_each_once,
    start_training_worker,
    start_worker,
    wait_for,
)

__all__ = [
    "DrillFailure",
    "Run",
    "assert_same_as_uninterrupted",
    "assert_store_holds_each_once",
    "start_training_worker",
    "start_worker",
    "wait_for",
]
