"""A TCP forwarder on loopback that a test can cut: every connection through it is reset and new ones
are refused (nothing listens on its port) until the test restores it on the same port."""

import asyncio
import contextlib
from dataclasses import dataclass, field

_CHUNK = 64 * 1024


@dataclass
class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream_host`:`upstream_port`; `url` is what a client dials."""

    upstream_host: str
    upstream_port: int
    port: int = 0  # 0: a free port, chosen at the first start and kept across restores
    accepted: int = 0
    _server: asyncio.Server | None = None
    _open: set[asyncio.StreamWriter] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def cut_off(self) -> bool:
        return self._server is None

    async def start(self) -> "TcpProxy":
        assert self._server is None, "already forwarding"
        self._server = await asyncio.start_server(self._forward, "127.0.0.1", self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def cut(self) -> None:
        """Stop listening (a connect is refused) and reset every connection it carries."""
        assert self._server is not None, "already cut"
        server, self._server = self._server, None
        server.close()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()
        await server.wait_closed()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()

    async def _forward(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)
        except OSError:
            client_writer.transport.abort()
            return
        pair = {client_writer, upstream_writer}
        if self.cut_off:  # cut while this one was connecting upstream
            for writer in pair:
                writer.transport.abort()
            return
        self._open |= pair
        try:
            await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
        finally:
            for writer in pair:
                writer.transport.abort()
            self._open -= pair


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until either side ends; then end the other direction too (no half-open connections)."""
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
