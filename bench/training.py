"""Training: one full retrain cycle through the real TrainingWorkflow (Temporal, PostgreSQL, MLflow).

1. Real data: the Kraken XBT/USD hourly history (../shared/data/kraken/XBTUSD_60.csv, 2013-2023) is
   loaded into the feature store and retrained end to end; the decision is reported whatever it is:
   skill vs persistence on the final test window, Diebold-Mariano p-value, interval coverage.
2. The volatility target of the same history (naive trailing mean, HAR, XGBoost; gated by
   Diebold-Mariano on the log scale), reported against the naive forecast whatever it shows.
3. Scale: one year of synthetic 1-minute candles (525,600 rows, a random walk with gap windows) through
   the same cycle with the default budgets: wall time and peak memory (the issue's bound: 15 minutes).

Each cycle's CPU seconds (user + system of the process hosting the worker) are what one retrain of one
target costs; the retrain budget (`model.max_retrains_per_day`) multiplies it.

Each cycle runs in a child process hosting its own training worker, so its peak RSS is the cycle's.
Needs the local stack (`cryptopredict stack up`).

Usage: .venv/bin/python bench/training.py [--quick]
Ends with one JSON line: {"xbtusd_skill_vs_persistence": ..., "xbtusd_dm_pvalue": ...,
"xbtusd_interval_coverage": ..., "xbtusd_promoted": ..., "xbtusd_vol_skill_vs_naive": ...,
"xbtusd_price_cpu_s": ..., "xbtusd_volatility_cpu_s": ..., "year_1m_cycle_s": ..., "year_1m_peak_rss_mb": ...}
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Run as `python bench/training.py`, this file's directory comes first on sys.path, where bench/grpc.py
# would shadow the grpc package that temporalio imports.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from cryptopredict.settings import Settings  # noqa: E402

REAL = ROOT.parent / "shared" / "data" / "kraken" / "XBTUSD_60.csv"
YEAR_OF_MINUTES = 525_600


async def load_synthetic(settings: Settings, pair: str, n: int) -> None:
    from cryptopredict.simulators.markets import synthetic_candles
    from cryptopredict.store.candles import async_engine, upsert_candles
    from cryptopredict.store.loader import batched

    engine = async_engine(settings.postgres)
    candles = synthetic_candles(pair, 60, n, datetime(2025, 1, 1, tzinfo=UTC), seed=11, gap_every=211)
    for batch in batched(candles, 5000):
        await upsert_candles(engine, batch)
    await engine.dispose()


async def cycle(kind: str, n: int, trials: int, target: str = "price") -> dict:
    """Runs in the child: loads the data, retrains through Temporal, returns the decision and costs."""
    from cryptopredict.orchestration import start_training, temporal_client, training_request
    from cryptopredict.settings import get_settings
    from cryptopredict.store.loader import load_ohlcvt
    from cryptopredict.store.migrate import migrate
    from workflows.worker import build_worker

    settings = get_settings()
    migrate(settings.postgres)
    if kind == "real":
        pair, interval_s = "XBT/USD", 3600
        loaded = await load_ohlcvt(settings, REAL, pair, interval_s)
    else:
        pair, interval_s, loaded = f"S{uuid.uuid4().hex[:4].upper()}/USD", 60, n
        await load_synthetic(settings, pair, n)
    request = training_request(
        settings, pair, interval_s, 1, reason="benchmark", trials=trials, target=target
    )
    client = await temporal_client(settings)
    task_queue = f"bench-training-{uuid.uuid4()}"
    started, cpu = time.perf_counter(), _cpu_s()
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as executor:
        async with build_worker(client, settings, executor, task_queue=task_queue):
            result = await start_training(settings, request, client=client, task_queue=task_queue)
    assert result is not None
    return {
        "candles": loaded,
        "rows": result.dataset.rows,
        "dropped": result.dataset.dropped,
        "features": len(result.dataset.features),
        "cycle_s": time.perf_counter() - started,
        "cpu_s": _cpu_s() - cpu,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "decision": result.decision_line(),
        "metrics": result.metrics,
        "tuned": [t.model_dump() for t in result.tuned],
        "screened": [s.model_dump() for s in result.screened[:5]],
        "test_rows": result.metrics.get("n"),
    }


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_child(kind: str, n: int, trials: int, target: str = "price") -> dict:
    command = [sys.executable, __file__, "--child", kind, "--rows", str(n), "--trials", str(trials)]
    command += ["--target", target]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{kind} cycle failed:\n{completed.stderr[-4000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="50k synthetic rows and 3 trials per family")
    parser.add_argument("--child", choices=["real", "synthetic"])
    parser.add_argument("--rows", type=int, default=YEAR_OF_MINUTES)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--target", choices=["price", "volatility"], default="price")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(cycle(args.child, args.rows, args.trials, args.target)), default=str))
        return

    trials = 3 if args.quick else 20
    rows = 50_000 if args.quick else YEAR_OF_MINUTES
    real = run_child("real", 0, trials)
    print(f"XBT/USD hourly: {json.dumps(real['decision'])} in {real['cycle_s']:.0f} s", file=sys.stderr)
    vol = run_child("real", 0, trials, "volatility")
    print(f"XBT/USD hourly volatility: {json.dumps(vol['decision'])}", file=sys.stderr)
    year = run_child("synthetic", rows, trials)
    print(
        f"{rows:,} 1-minute rows: {year['cycle_s']:.0f} s, peak {year['peak_rss_mb']:.0f} MB", file=sys.stderr
    )

    decision, metrics, vdecision = real["decision"], real["metrics"], vol["decision"]
    reasons = "\n".join(f"- {reason}" for reason in decision["reasons"])
    body = f"""
One retrain (dataset -> LazyPredict screening -> Optuna TPE tuning of XGBoost and a linear model ->
evaluation on the final test window -> the promotion gate -> MLflow registry) through the real
TrainingWorkflow, its worker in the measuring process; {trials} Optuna trials per family, the other
budgets at their defaults (`cryptopredict/models/training.py`).

**Real data: Kraken XBT/USD hourly, 2013-2023, horizon 1 hour.** {real["candles"]:,} candles ->
{real["rows"]:,} rows x {real["features"]} features (dropped: {real["dropped"]}).

| figure | value |
|---|---|
| promoted | {decision["promoted"]} |
| skill vs persistence (1 - MAE/MAE_persistence, test window) | {decision["skill_vs_persistence"]:+.4f} |
| Diebold-Mariano p-value vs persistence (one-sided) | {decision["dm_pvalue"]:.3g} |
| interval coverage, constant width (nominal 0.80) | {decision["interval_coverage"]:.3f} |
| coverage calm / mid / wild (adaptive interval) | {_regimes(decision["coverage_by_regime"])} |
| interval score, adaptive / constant width | {_figure(decision["interval_score_vs_constant"])} |
| MAE / persistence MAE (USD) | {metrics["mae"]:.2f} / {metrics["persistence_mae"]:.2f} |
| direction accuracy / base rate | {metrics["direction_accuracy"]:.3f} / {metrics["direction_base_rate"]:.3f} |
| test rows | {metrics["n"]:.0f} |
| cycle time / CPU | {real["cycle_s"]:.0f} s / {real["cpu_s"]:.0f} CPU s |

The gate's reasons:
{reasons}

**The volatility target of the same history** (estimator `{vdecision["estimator"]}`, horizon 1 hour):

| figure | value |
|---|---|
| challenger family | {vdecision["family"]} |
| promoted | {vdecision["promoted"]} |
| skill vs naive trailing mean (1 - logMAE / logMAE_naive) | {_figure(vdecision["vol_skill_vs_naive"])} |
| Diebold-Mariano p-value vs naive | {_figure(vdecision["vol_dm_pvalue"])} |
| cycle time / CPU | {vol["cycle_s"]:.0f} s / {vol["cpu_s"]:.0f} CPU s |

**Scale: {rows:,} synthetic 1-minute candles (a random walk with gap windows).** {year["rows"]:,} rows.

| figure | value |
|---|---|
| full cycle, wall time | {year["cycle_s"]:.0f} s ({year["cycle_s"] / 60:.1f} min; bound 15 min) |
| CPU | {year["cpu_s"]:.0f} CPU s |
| peak memory of the process (RSS) | {year["peak_rss_mb"]:.0f} MB |
| promoted (a random walk: must be false) | {year["decision"]["promoted"]} |
"""
    command = "python bench/training.py" + (" --quick" if args.quick else "")
    publish(
        "Training: one retrain cycle",
        command,
        body,
        {
            "xbtusd_skill_vs_persistence": decision["skill_vs_persistence"],
            "xbtusd_dm_pvalue": decision["dm_pvalue"],
            "xbtusd_interval_coverage": decision["interval_coverage"],
            "xbtusd_promoted": decision["promoted"],
            "xbtusd_vol_skill_vs_naive": vdecision["vol_skill_vs_naive"],
            "xbtusd_vol_promoted": vdecision["promoted"],
            "xbtusd_price_cpu_s": round(real["cpu_s"], 1),
            "xbtusd_volatility_cpu_s": round(vol["cpu_s"], 1),
            "year_1m_cpu_s": round(year["cpu_s"], 1),
            "year_1m_cycle_s": round(year["cycle_s"], 1),
            "year_1m_peak_rss_mb": round(year["peak_rss_mb"], 1),
        },
    )


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3g}"


def _regimes(coverage: dict[str, float | None]) -> str:
    return " / ".join(_figure(coverage.get(regime)) for regime in ("calm", "mid", "wild"))


if __name__ == "__main__":
    main()
