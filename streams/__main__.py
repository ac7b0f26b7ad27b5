"""`python -m streams worker -l info`: runs the Faust worker with every agent."""

import asyncio
import sys

from cryptopredict.kafka_admin import ensure_topics
from streams.app import app, load_agents, settings

# Faust's web server is not used, and several workers on one host would clash on its port.
if "worker" in sys.argv and "--with-web" not in sys.argv and "--without-web" not in sys.argv:
    sys.argv.append("--without-web")
# Faust does not create source topics, and a consumer that subscribes before they exist stays idle.
asyncio.run(ensure_topics(settings.kafka))
load_agents()
app.main()
