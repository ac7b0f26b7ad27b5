"""Inputs and outputs of the training workflow and its activities (one model per call, so fields can
be added without breaking callers or saved histories)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from cryptopredict.models.base import UtcDatetime
from cryptopredict.models.ml import ModelRef

CandidateKind = Literal["persistence", "xgboost"]


class TrainingInput(BaseModel):
    pair: str = "BTC/USD"
    interval_s: int = Field(default=60, gt=0)
    horizon_candles: int = Field(default=1, gt=0)
    lags: int = Field(default=10, gt=0)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    min_rows: int = Field(default=100, gt=0)


class DatasetSummary(BaseModel):
    path: str
    pair: str
    interval_s: int
    horizon_candles: int
    rows: int
    dropped: int
    features: list[str]
    start: UtcDatetime
    end: UtcDatetime
    content_hash: str


class FitInput(BaseModel):
    dataset: DatasetSummary
    kind: CandidateKind
    test_fraction: float


class Candidate(BaseModel):
    kind: CandidateKind
    run_id: str
    model_uri: str
    metrics: dict[str, float]


class PromoteInput(BaseModel):
    registered_model: str
    candidates: list[Candidate]


class TrainingResult(BaseModel):
    champion: ModelRef
    registered: list[ModelRef]
    decision: str
    dataset: DatasetSummary
    metrics: dict[str, dict[str, float]]
