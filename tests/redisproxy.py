"""A TCP relay in front of a real Redis that loses a connection at a chosen moment."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit


class CuttingProxy:
    """A TCP relay to Redis that, once armed, cuts the connection (and refuses every later one
    while ``cut``):

    - ``budget``: after passing that many more bytes from the client: a connection lost
      mid-request, so Redis never has the whole command;
    - ``lose_reply``: after Redis answered the client's next request, before the answer
      reaches it: Redis ran the command, the client cannot know.

    ``cut = False`` lets new connections through again."""

    def __init__(self, redis_url: str) -> None:
        self.target = urlsplit(redis_url)
        self.budget: int | None = None
        self.lose_reply = False
        self.cut = False

    async def start(self) -> str:
        """Listen on a free port; the URL to reach Redis through the relay."""
        server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.server = server
        port = int(server.sockets[0].getsockname()[1])
        netloc = self.target.netloc.replace(f"{self.target.hostname}:{self.target.port}", f"127.0.0.1:{port}")
        return urlunsplit(self.target._replace(netloc=netloc))

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(self.target.hostname, self.target.port)

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.budget is not None:
                    data, self.budget = data[:self.budget], self.budget - len(data)
                up_writer.write(data)
                await up_writer.drain()
                if self.budget is not None and self.budget <= 0:
                    self.cut = True
                    break
            up_writer.close()
            writer.close()

        async def downstream() -> None:
            while (data := await up_reader.read(65536)) and not self.cut:
                if self.lose_reply:
                    self.cut, self.lose_reply = True, False
                    break
                writer.write(data)
                await writer.drain()
            writer.close()
            up_writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)
