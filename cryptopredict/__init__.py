"""Shared core of the crypto forecasting mesh: settings, models, features, store, ML.

Three subpackages are not domain code and no other module of the core imports them: `cli` (the
`cryptopredict` command and the demo), `stack` (the local stack launcher) and `simulators` (the replay
exchange, the news server and synthetic markets). The layers are checked by lint-imports (pyproject.toml).
"""
