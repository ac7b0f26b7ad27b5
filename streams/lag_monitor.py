"""Timer that exports the worker's consumer-group lag per topic and partition as a Prometheus gauge.

Read from the broker (committed offsets against end offsets), so it is the lag every worker of the
group shares, measured the way `kafka-consumer-groups --describe` measures it.
"""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

from cryptopredict import metrics
from cryptopredict.kafka_admin import consumer_lag
from streams.app import app, settings

logger = logging.getLogger(__name__)

LAG_EVERY_S = 15.0


@app.timer(interval=LAG_EVERY_S)
async def export_consumer_lag() -> None:
    group = app.conf.id
    try:
        lag = await consumer_lag(settings.kafka, group)
    except KafkaError as exc:  # the broker briefly away: keep the last values
        logger.warning("consumer lag not updated: %s", exc)
        return
    for (topic, partition), behind in lag.items():
        metrics.CONSUMER_LAG.labels(group, topic, str(partition)).set(behind)
