"""The registered name of every workflow type: the workflow definitions use them, and so does every
starter (CLI, schedules, activities), which may not import the workflow classes themselves (the core
sits below the adapters)."""

from typing import Final

TRAINING: Final = "TrainingWorkflow"
SCHEDULED_RETRAIN: Final = "ScheduledRetrainWorkflow"
DRIFT_MONITOR: Final = "DriftMonitorWorkflow"
BACKFILL: Final = "BackfillWorkflow"
NEWS_INGEST: Final = "NewsIngestWorkflow"
SENTIMENT: Final = "SentimentWorkflow"
RETENTION: Final = "RetentionWorkflow"
