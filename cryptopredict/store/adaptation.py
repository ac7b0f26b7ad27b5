"""Adaptive conformal inference from the outcome ledger: each model version's interval level follows the
coverage its served intervals actually had (cryptopredict.ml.intervals.aci_update), and the state lives
in the store (table `interval_adaptation`), so it survives a restart and is shared by every worker.

An update locks the version's row, reads the outcomes newer than the last one counted and moves the
level by them: two workers updating at once count each outcome once. An outcome whose candle is written
after a newer one was counted is not counted (the ledger itself still has it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, text

from cryptopredict.ml.intervals import aci_update

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
    with engine.begin() as connection:
        connection.execute(_ENSURE, {**keys, "alpha": 1.0 - nominal})
        alpha, outcomes, misses, through = connection.execute(_LOCK, keys).one()
        rows = connection.execute(_NEW_OUTCOMES, {**keys, "through": through}).all()
        if rows:
            inside = [bool(row.inside_interval) for row in rows]
            alpha = aci_update(alpha, [not hit for hit in inside], 1.0 - nominal, gamma)
            outcomes, misses = outcomes + len(rows), misses + inside.count(False)
            last: datetime = rows[-1].target_time
            connection.execute(
                _SAVE, {**keys, "alpha": alpha, "outcomes": outcomes, "misses": misses, "through": last}
            )
    return Adaptation(level=1.0 - alpha, outcomes=outcomes, misses=misses)
