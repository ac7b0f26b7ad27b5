"""`python -m streams worker -l info`: runs the Faust worker with every agent, under a small supervisor.

The supervisor starts the worker as a child and starts it again when it exits with RESTART_EXIT_CODE
(an agent found records that Faust skipped, see streams.guard); SIGTERM and SIGINT
are passed on to the child (killed if it has not stopped STOP_GRACE_S later). Any other exit ends the
supervisor with the child's code.
"""

import asyncio
import gc
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from typing import Any

from cryptopredict.offsets import RESTART_EXIT_CODE, STOP_GRACE_S

GIL_SWITCH_INTERVAL_S = 0.0005
CHILD_ENV = "CRYPTOPREDICT_STREAM_WORKER_CHILD"


def supervise() -> int:
    logger = logging.getLogger("streams.supervisor")
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    child: subprocess.Popen[bytes] | None = None
    stop_requested_at: float | None = None

    def forward(signum: int, _frame: object) -> None:
        nonlocal stop_requested_at
        stop_requested_at = stop_requested_at or time.monotonic()
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while True:
        env = os.environ | {CHILD_ENV: "1"}
        child = subprocess.Popen([sys.executable, "-m", "streams", *sys.argv[1:]], env=env)
        while (code := child.poll()) is None:
            # Faust can wait forever for events buffered by `take` on shutdown; a kill is safe (the
            # worker is built to survive kill -9), so a stop never takes longer than STOP_GRACE_S.
            if stop_requested_at is not None and time.monotonic() - stop_requested_at > STOP_GRACE_S:
                logger.warning("stream worker did not stop within %.0f s; killing it", STOP_GRACE_S)
                child.kill()
            time.sleep(0.2)
        if code != RESTART_EXIT_CODE or stop_requested_at is not None:
            return code
        logger.warning("stream worker asked to be restarted; starting it again")
        time.sleep(1.0)


def at_start(action: Callable[[], Coroutine[Any, Any, object]], what: str) -> None:
    """Runs a start-up step against the brokers, waiting for brokers that are away (a worker restarted
    while a broker is down must not die of it); a broker that refuses this client ends the worker with
    one line."""
    from aiokafka.errors import KafkaError

    from cryptopredict.kafka_admin import KafkaConnectError

    logger = logging.getLogger("streams.supervisor")
    delay = 1.0
    while True:
        try:
            asyncio.run(action())
            return
        except KafkaConnectError as exc:
            if exc.refused:  # wrong credentials or certificates: waiting cannot help
                print(f"stream worker: {exc}", file=sys.stderr)
                sys.exit(2)
            logger.warning("%s failed (%s); retrying in %.0f s", what, exc, delay)
        except KafkaError as exc:
            logger.warning("%s failed (%s); retrying in %.0f s", what, exc, delay)
        time.sleep(delay)
        delay = min(delay * 2, 10.0)


def run_worker() -> None:
    from cryptopredict.kafka_admin import ensure_topic_config, ensure_topics
    from cryptopredict.metrics import serve_metrics
    from streams.app import CHANGELOG_CONFIG, app, load_agents, settings

    # Faust's web server is not used, and several workers on one host would clash on its port.
    if "worker" in sys.argv and "--with-web" not in sys.argv and "--without-web" not in sys.argv:
        sys.argv.append("--without-web")
    # Faust does not create source topics, and a consumer that subscribes before they exist stays idle.
    at_start(lambda: ensure_topics(settings.kafka), "creating the topics")
    load_agents()
    # Faust configures a changelog only when it creates it: changelogs made before get the settings here.
    changelogs = [table.changelog_topic.get_topic_name() for table in app.tables.values()]
    at_start(
        lambda: ensure_topic_config(settings.kafka, changelogs, CHANGELOG_CONFIG), "configuring changelogs"
    )
    serve_metrics(settings.metrics.host, settings.metrics.stream_port)
    # What start-up left on the heap (Faust, pandas, MLflow, the agents: ~400,000 objects) is kept for
    # good: moved out of the collector's reach, a full collection no longer walks it, which stalled every
    # agent for 100-200 ms, the slowest candles' whole delay.
    gc.collect()
    gc.freeze()
    # Faust reads Kafka in a thread of its own: while the agents hold the GIL, each fetched record waited up
    # to the default 5 ms switch interval to reach them, on each Kafka hop of a trade to its forecast.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    app.main()


if "worker" in sys.argv and os.environ.get(CHILD_ENV) != "1":
    sys.exit(supervise())
run_worker()
