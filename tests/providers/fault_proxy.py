"""A small HTTP proxy on 127.0.0.1 that injects faults between the provider and a real server.

Each request takes the next fault from :attr:`FaultProxy.faults` (none left: forwarded as is):

* ``"429"``: answers 429 with ``Retry-After: <retry_after>``;
* ``"500"``: answers 500;
* ``"slow"``: waits ``slow_seconds`` before forwarding (longer than the client's timeout);
* ``"drop"``: closes the connection without answering;
* ``"strip_dimensions"``: forwards the request without its ``dimensions`` field.

Independently, a request whose body contains :attr:`reject_marker` is answered 400, and
``down=True`` answers 503 to everything. One request per connection (``Connection: close``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Seen:
    """One request as the proxy saw it."""

    at: float
    fault: str | None
    inputs: int


@dataclass
class FaultProxy:
    upstream_port: int
    faults: list[str] = field(default_factory=list)
    reject_marker: str | None = None
    down: bool = False
    retry_after: float = 1.0
    slow_seconds: float = 3.0
    hold_seconds: float = 0.0  # every forwarded request takes at least this long
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def start(self) -> FaultProxy:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fault proxy did not start")
        return self

    def stop(self) -> None:
        """Close the server and every connection still open, then the loop: nothing is left
        for the garbage collector to finalise after the test."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        self._server.close()
        handlers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await self._server.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await self._serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.in_flight -= 1
            await _close(writer)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        fault = self.faults.pop(0) if self.faults else None
        inputs = _inputs(body)
        self.seen.append(Seen(time.monotonic(), fault, inputs))
        if self.down:
            return await _answer(writer, 503, {"error": {"message": "down for maintenance"}})
        if self.reject_marker and self.reject_marker.encode() in body:
            return await _answer(writer, 400, {"error": {"message": "input rejected"}})
        if fault == "429":
            return await _answer(writer, 429, {"error": {"message": "rate limited"}},
                                 {"Retry-After": f"{self.retry_after:g}"})
        if fault == "500":
            return await _answer(writer, 500, {"error": {"message": "internal error"}})
        if fault == "drop":
            writer.transport.abort()
            return None
        if fault == "slow":
            await asyncio.sleep(self.slow_seconds)
        if fault == "strip_dimensions":
            payload = json.loads(body)
            payload.pop("dimensions", None)
            body = json.dumps(payload).encode()
        started = time.monotonic()
        response = await self._forward(lines[0], headers, body)
        await asyncio.sleep(max(0.0, self.hold_seconds - (time.monotonic() - started)))
        writer.write(response)
        await writer.drain()
        return None

    async def _forward(self, request_line: str, headers: dict[str, str], body: bytes) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        headers = {**headers, "content-length": str(len(body)), "connection": "close",
                   "host": f"127.0.0.1:{self.upstream_port}"}
        head = request_line + "\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        await writer.drain()
        response = await reader.read(-1)
        await _close(writer)
        return response


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _inputs(body: bytes) -> int:
    try:
        value = json.loads(body).get("input", [])
    except ValueError:
        return 0
    return len(value) if isinstance(value, list) else 1


async def _answer(writer: asyncio.StreamWriter, status: int, payload: object,
                  extra: dict[str, str] | None = None) -> None:
    body = json.dumps(payload).encode()
    reason = {400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error",
              503: "Service Unavailable"}[status]
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items()) + "\r\n")
    writer.write(head.encode() + body)
    await writer.drain()
