"""`python -m streams worker -l info`: runs the Faust worker with every agent."""

import asyncio

from cryptopredict.kafka_admin import ensure_topics
from streams.app import app, load_agents, settings

# Faust does not create source topics, and a consumer that subscribes before they exist stays idle.
asyncio.run(ensure_topics(settings.kafka))
load_agents()
app.main()
