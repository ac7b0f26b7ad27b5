"""The RetentionWorkflow's input (ages, and the scope it may touch), one prune step's request and what
each step reports."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cryptopredict.models.base import UtcDatetime

PruneKind = Literal["predictions", "dead_letters", "late_trades", "optuna_studies", "mlflow_versions"]
PRUNE_KINDS: tuple[PruneKind, ...] = (
    "predictions",
    "dead_letters",
    "late_trades",
    "optuna_studies",
    "mlflow_versions",
)


class RetentionAges(BaseModel):
    """Age in days after which each kind goes; 0 keeps that kind forever (its step is skipped)."""

    predictions_days: float = Field(default=180.0, ge=0)
    dead_letters_days: float = Field(default=30.0, ge=0)
    late_trades_days: float = Field(default=7.0, ge=0)
    optuna_studies_days: float = Field(default=30.0, ge=0)
    mlflow_versions_days: float = Field(default=90.0, ge=0)

    def days(self, kind: PruneKind) -> float:
        value: float = getattr(self, f"{kind}_days")
        return value


class RetentionScope(BaseModel):
    """What a run may touch. None (the schedule's) is everything; a test narrows each to its own objects."""

    pairs: list[str] | None = None  # market keys (topics.market_key): predictions of these venues and pairs
    dead_letter_sources: list[str] | None = None
    model_prefix: str | None = None
    study_prefix: str | None = None
    # Topic prefix of `late_trades` (None: the worker's kafka.topic_prefix).
    topic_prefix: str | None = None


class RetentionInput(BaseModel):
    ages: RetentionAges = Field(default_factory=RetentionAges)
    scope: RetentionScope = Field(default_factory=RetentionScope)
    batch_rows: int = Field(default=5_000, ge=1)


class PruneRequest(BaseModel):
    """One step: delete what is older than `cutoff` (the workflow's clock minus the age, fixed in its
    history so that a retried step deletes by the same line)."""

    kind: PruneKind
    cutoff: UtcDatetime
    age_days: float = Field(gt=0)
    scope: RetentionScope = Field(default_factory=RetentionScope)
    batch_rows: int = Field(default=5_000, ge=1)


class PruneCount(BaseModel):
    """`deleted` rows, versions or studies; `kept` those old enough but protected (aliases, running)."""

    kind: PruneKind
    deleted: int = 0
    kept: int = 0
    detail: str = ""

    def summary(self) -> str:
        text = f"{self.kind}: {self.deleted} deleted"
        if self.kept:
            text += f", {self.kept} kept"
        return f"{text} ({self.detail})" if self.detail else text


class RetentionReport(BaseModel):
    counts: list[PruneCount] = Field(default_factory=list)

    def count(self, kind: PruneKind) -> PruneCount:
        return next(c for c in self.counts if c.kind == kind)

    def summary(self) -> str:
        return "; ".join(c.summary() for c in self.counts)
