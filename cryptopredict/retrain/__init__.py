"""One retrain of a target, step by step: each function here is what one TrainingWorkflow activity does
(read the store, fit, gate, log to MLflow), so the activities only adapt Temporal to it. It sits above
the store and ml: `runs` is the retrain's MLflow run and dataset, `price` and `volatility` the steps of
each target."""
