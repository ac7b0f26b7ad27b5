"""Serve a GGUF model over llama.cpp's OpenAI-compatible HTTP API, via xllamacpp.

`xllamacpp.Server(params)` starts llama.cpp's own C++ HTTP server in background threads; this
process only has to configure it and stay alive until it is signalled.

    python -m cryptopredict.stack.llm_server --model PATH --host 127.0.0.1 --port 8081 --alias NAME
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="path of the .gguf file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--alias", required=True, help="model name clients send and /v1/models lists")
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    import xllamacpp

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    params = xllamacpp.CommonParams()
    params.model.path = args.model
    params.model_alias = {args.alias}
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = 1
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads
    params.ui = False

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %s, stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = xllamacpp.Server(params)
    logger.info("llama.cpp server on %s serving %s as %s", server.listening_address, args.model, args.alias)
    stop.wait()


if __name__ == "__main__":
    main()
