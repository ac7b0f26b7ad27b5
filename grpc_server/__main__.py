"""Entry point: ``python -m grpc_server`` serves predictions on settings.grpc.host:port."""

from __future__ import annotations

import asyncio
import logging
import signal

from cryptopredict.settings import get_settings
from grpc_server.server import serve

logger = logging.getLogger(__name__)


async def _main() -> None:
    # SIGTERM (Kubernetes, `stack down`) cancels like Ctrl-C does, so serve() stops gracefully.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    await serve(get_settings())


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(_main())
    except (KeyboardInterrupt, asyncio.CancelledError):
        logger.info("stopped")


if __name__ == "__main__":
    main()
