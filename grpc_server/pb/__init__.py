"""Generated protobuf and gRPC modules; regenerate with protos/generate.py."""
