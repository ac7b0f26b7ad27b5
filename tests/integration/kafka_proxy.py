"""A TCP proxy in front of the local Kafka broker that a test can cut and restore, for one client only.

A Kafka client connects to its bootstrap server once, then to the addresses the brokers advertise in
Metadata responses: through a plain TCP proxy it would reach the shared broker directly after the first
answer. This proxy rewrites those addresses to its own, so every connection of the client goes through
it, while everyone else keeps the broker. It reads each frame's header (size, API key, version,
correlation id) and rewrites only Metadata responses (flexible versions 9 and up, which every current
client uses); everything else passes through as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct

METADATA = 3
FLEXIBLE_METADATA = 9


def _uvarint(b: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = b[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _put_uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _skip_tags(b: bytes, pos: int) -> int:
    count, pos = _uvarint(b, pos)
    for _ in range(count):
        _, pos = _uvarint(b, pos)  # tag
        size, pos = _uvarint(b, pos)
        pos += size
    return pos


def rewrite_metadata(response: bytes, version: int, host: str, port: int) -> bytes:
    """A Metadata response (from the correlation id on) whose every broker is at host:port."""
    if version < FLEXIBLE_METADATA:
        raise ValueError(f"Metadata v{version}: this proxy rewrites v{FLEXIBLE_METADATA} and up")
    pos = _skip_tags(response, 4)  # correlation id, then the flexible response header's tags
    pos += 4  # throttle_time_ms
    head = response[:pos]
    count, pos = _uvarint(response, pos)
    brokers = bytearray(_put_uvarint(count))
    encoded_host = host.encode()
    for _ in range(count - 1):  # a compact array holds count - 1 items
        (node_id,) = struct.unpack_from(">i", response, pos)
        pos += 4
        length, pos = _uvarint(response, pos)
        pos += length - 1  # the broker's own host
        pos += 4  # its port
        rack_start = pos
        length, pos = _uvarint(response, pos)
        pos += max(length - 1, 0)
        pos = _skip_tags(response, pos)
        brokers += struct.pack(">i", node_id) + _put_uvarint(len(encoded_host) + 1) + encoded_host
        brokers += struct.pack(">i", port) + response[rack_start:pos]
    return head + bytes(brokers) + response[pos:]


class KafkaProxy:
    """Listens on 127.0.0.1:<port> and relays every connection to the broker at `upstream`."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.host = "127.0.0.1"
        self.port = 0
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._relay, self.host, self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Kafka is gone for the client: its connections drop, new ones are refused."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for task in list(self.connections):
            task.cancel()
        await asyncio.gather(*self.connections, return_exceptions=True)

    async def restore(self) -> None:
        await self.start()  # the same port

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            broker_in, broker_out = await asyncio.open_connection(*self.upstream)
        except OSError:
            client_out.close()
            self.connections.discard(task)
            return
        asked: dict[int, tuple[int, int]] = {}  # correlation id -> (API key, version)

        async def requests() -> None:
            while frame := await _frame(client_in):
                key, version, correlation = struct.unpack_from(">hhi", frame)
                asked[correlation] = (key, version)
                broker_out.write(struct.pack(">i", len(frame)) + frame)
                await broker_out.drain()

        async def responses() -> None:
            while frame := await _frame(broker_in):
                (correlation,) = struct.unpack_from(">i", frame)
                key, version = asked.pop(correlation, (-1, -1))
                if key == METADATA:
                    frame = rewrite_metadata(frame, version, self.host, self.port)
                client_out.write(struct.pack(">i", len(frame)) + frame)
                await client_out.drain()

        directions = [asyncio.create_task(requests()), asyncio.create_task(responses())]
        try:
            # Either side closing ends the connection: Kafka clients and brokers close whole connections.
            await asyncio.wait(directions, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for direction in directions:
                direction.cancel()
            await asyncio.gather(*directions, return_exceptions=True)
            for writer in (client_out, broker_out):
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
            self.connections.discard(task)


async def _frame(reader: asyncio.StreamReader) -> bytes:
    """The next size-prefixed frame; b"" at the end of the stream."""
    try:
        size = await reader.readexactly(4)
    except asyncio.IncompleteReadError:
        return b""
    return await reader.readexactly(struct.unpack(">i", size)[0])
