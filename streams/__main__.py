"""`python -m streams worker -l info`: runs the Faust worker with every agent."""

from streams.app import app, load_agents

load_agents()
app.main()
