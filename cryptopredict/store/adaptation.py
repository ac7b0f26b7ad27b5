"""Adaptive conformal inference from the outcome ledger: each model version's interval level follows the
coverage its served intervals actually had (cryptopredict.ml.intervals.aci_update), and the state lives
in the store (table `interval_adaptation`), so it survives a restart and is shared by every worker.

An update locks the version's row, reads the outcomes newer than the last one counted and moves the
level by them: two workers updating at once count each outcome once. An outcome whose candle is written
after a newer one was counted is not counted (the ledger itself still has it).

RisingWave has no row locks and no INSERT ... ON CONFLICT: there the row is read without a lock and the
new state inserted whole, overwriting the row by its primary key. A state written is always the state
read plus the outcomes after it, so two updaters at once never count an outcome twice in it: the slower
one may put back the older of two states, and the next update counts the outcomes after that one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, insert, text

from cryptopredict.ml.intervals import aci_update
from cryptopredict.store.dialect import IMPLICIT_FLUSH, on_risingwave
from cryptopredict.store.schema import interval_adaptation

_ENSURE = text(
    """
    INSERT INTO interval_adaptation (model_name, model_version, alpha, outcomes, misses)
    VALUES (:name, :version, :alpha, 0, 0)
    ON CONFLICT (model_name, model_version) DO NOTHING
    """
)
_LOCK = text(
    """
    SELECT alpha, outcomes, misses, through FROM interval_adaptation
    WHERE model_name = :name AND model_version = :version FOR UPDATE
    """
)
# The level an outcome was drawn at is the one ACI judges it by; outcomes without an interval say nothing.
_NEW_OUTCOMES = text(
    """
    SELECT target_time, inside_interval FROM prediction_outcomes
    WHERE model_name = :name AND model_version = :version AND inside_interval IS NOT NULL
      AND (CAST(:through AS timestamptz) IS NULL OR target_time > :through)
    ORDER BY target_time
    """
)
_SAVE = text(
    """
    UPDATE interval_adaptation
    SET alpha = :alpha, outcomes = :outcomes, misses = :misses, through = :through, updated_at = now()
    WHERE model_name = :name AND model_version = :version
    """
)
# RisingWave: the state read without a lock, and the new one inserted whole (every column, in order).
_READ = text(
    """
    SELECT alpha, outcomes, misses, through FROM interval_adaptation
    WHERE model_name = :name AND model_version = :version
    """
)
_OVERWRITE = insert(interval_adaptation)


@dataclass(frozen=True)
class Adaptation:
    level: float  # the coverage to draw the next intervals at
    outcomes: int  # outcomes counted so far
    misses: int


def adapt_interval_level(
    engine: Engine, model_name: str, model_version: str, nominal: float, gamma: float
) -> Adaptation:
    """Counts the version's new outcomes into its level (starting at `nominal`) and returns it."""
    keys = {"name": model_name, "version": model_version}
    if on_risingwave(engine):
        return _adapt_on_risingwave(engine, keys, nominal, gamma)
    with engine.begin() as connection:
        connection.execute(_ENSURE, {**keys, "alpha": 1.0 - nominal})
        alpha, outcomes, misses, through = connection.execute(_LOCK, keys).one()
        rows = connection.execute(_NEW_OUTCOMES, {**keys, "through": through}).all()
        if rows:
            alpha, outcomes, misses, last = _counted(rows, alpha, outcomes, misses, nominal, gamma)
            connection.execute(
                _SAVE, {**keys, "alpha": alpha, "outcomes": outcomes, "misses": misses, "through": last}
            )
    return Adaptation(level=1.0 - alpha, outcomes=outcomes, misses=misses)


def _adapt_on_risingwave(engine: Engine, keys: dict[str, str], nominal: float, gamma: float) -> Adaptation:
    with engine.begin() as connection:
        connection.execute(IMPLICIT_FLUSH)
        state = connection.execute(_READ, keys).first()
        alpha, outcomes, misses, through = (1.0 - nominal, 0, 0, None) if state is None else state
        rows = connection.execute(_NEW_OUTCOMES, {**keys, "through": through}).all()
        if rows or state is None:
            if rows:
                alpha, outcomes, misses, through = _counted(rows, alpha, outcomes, misses, nominal, gamma)
            state_now = {"alpha": alpha, "outcomes": outcomes, "misses": misses, "through": through}
            key = {"model_name": keys["name"], "model_version": keys["version"]}
            connection.execute(_OVERWRITE, {**key, **state_now, "updated_at": datetime.now(UTC)})
    return Adaptation(level=1.0 - alpha, outcomes=outcomes, misses=misses)


def _counted(
    rows: Sequence[Any], alpha: float, outcomes: int, misses: int, nominal: float, gamma: float
) -> tuple[float, int, int, datetime]:
    """The state after the outcomes `rows` (target_time, inside_interval; in target time order)."""
    inside = [bool(row.inside_interval) for row in rows]
    alpha = aci_update(alpha, [not hit for hit in inside], 1.0 - nominal, gamma)
    last: datetime = rows[-1].target_time
    return alpha, outcomes + len(rows), misses + inside.count(False), last
