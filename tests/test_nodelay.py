"""Served sockets have Nagle off: a response's head and body are not held back by delayed ACKs."""

from __future__ import annotations

import socket
import statistics
import time

import httpx
from fastapi import FastAPI

from retrieval.api import serve_in_thread
from retrieval.api.app import bind_port


def test_the_listening_socket_of_serve_has_nodelay() -> None:
    sock = bind_port("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        sock.close()


def test_sequential_requests_on_one_connection_are_not_delayed_by_acks() -> None:
    """With Nagle on, every response waited for the client's delayed ACK: 40 ms or more each."""
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"ok": True}

    with serve_in_thread(app) as url, httpx.Client(base_url=url) as client:
        client.get("/ping")
        took = []
        for _ in range(30):
            started = time.perf_counter()
            assert client.get("/ping").json() == {"ok": True}
            took.append(time.perf_counter() - started)
    assert statistics.median(took) < 0.02, f"median {statistics.median(took) * 1000:.1f} ms per request"
