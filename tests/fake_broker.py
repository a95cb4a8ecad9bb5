"""A real asyncio socket server speaking just enough MQTT 3.1.1 to misbehave like a broker.

Each ``mode`` is something a broker or a proxy before it was seen to do:

* ``stall``: CONNACK, SUBACK and PINGRESP, but never a PUBACK (publishes are recorded);
* ``ack``: the same, acknowledging every QoS 1 publish;
* ``close``: accept the connection and close it on CONNECT, before any CONNACK (what
  RabbitMQ does to an MQTT 5 client);
* ``refuse``: answer CONNECT with a CONNACK refusing it (``refusal`` return code);
* ``silent``: accept and read, never answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class Publish:
    connection: int  # which connection (1, 2, ...) carried it
    topic: str
    payload: bytes
    dup: bool


@dataclass
class FakeBroker:
    mode: str = "stall"
    refusal: int = 5  # CONNACK return code in mode "refuse": 5 = not authorised
    port: int = 0
    connections: int = 0
    publishes: list[Publish] = field(default_factory=list)
    pingreqs: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers.add(writer)
        try:
            while True:
                kind, flags, body = await read_packet(reader)
                if not self._answer(number, kind, flags, body, writer):
                    break
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, number: int, kind: int, flags: int, body: bytes,
                writer: asyncio.StreamWriter) -> bool:
        """Answer one packet; False to close the connection."""
        if kind == 1:  # CONNECT
            if self.mode == "close":
                return False
            if self.mode == "refuse":
                writer.write(bytes([0x20, 2, 0, self.refusal]))
                return False
            if self.mode != "silent":
                writer.write(bytes([0x20, 2, 0, 0]))
        elif kind == 3:  # PUBLISH
            qos = (flags >> 1) & 3
            size = int.from_bytes(body[:2], "big")
            topic = body[2:2 + size].decode()
            rest = body[2 + size:]
            packet_id, payload = (rest[:2], rest[2:]) if qos else (b"", rest)
            self.publishes.append(Publish(number, topic, payload, bool(flags & 8)))
            if qos == 1 and self.mode == "ack":
                writer.write(bytes([0x40, 2]) + packet_id)
        elif kind == 8:  # SUBSCRIBE: grant QoS 1 to every filter
            filters = count_filters(body[2:])
            writer.write(bytes([0x90, 2 + filters]) + body[:2] + bytes([1] * filters))
        elif kind == 12:  # PINGREQ
            self.pingreqs += 1
            if self.mode != "silent":
                writer.write(bytes([0xD0, 0]))
        elif kind == 14:  # DISCONNECT
            return False
        return True


async def read_packet(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    first = (await reader.readexactly(1))[0]
    length, shift = 0, 0
    while True:
        byte = (await reader.readexactly(1))[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    return first >> 4, first & 0x0F, await reader.readexactly(length)


def count_filters(payload: bytes) -> int:
    count, at = 0, 0
    while at < len(payload):
        size = int.from_bytes(payload[at:at + 2], "big")
        at += 2 + size + 1
        count += 1
    return count
