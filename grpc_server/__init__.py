"""gRPC edge of the system: streams the predictions from topic `predictions` to clients.

Run it with ``python -m grpc_server``; see server.py for what it serves.
"""
