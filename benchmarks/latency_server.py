"""An OpenAI-compatible chat endpoint on 127.0.0.1 that answers every request after a fixed latency.

Run in its own process (``python benchmarks/latency_server.py --latency-ms 100``; it prints
``PORT <n>`` once listening) so the benchmark's client does not share an interpreter with it.
Served by uvicorn (installed with dagster-webserver) as a raw ASGI app: an ``asyncio.sleep``
per request, so 500 requests in flight cost it nothing but the sleep. ``GET /stats`` says how
many requests it served and the most it had in flight at once; ``POST /reset`` zeroes both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys

ANSWER = {
    "vendor": "Northwind Traders Ltd", "invoice_number": "INV-1", "date": "2026-03-14", "currency": "EUR",
    "total": 12.0, "tax": 2.0, "line_items": [{"description": "Widget", "quantity": 2, "unit_price": 5.0, "amount": 10.0}],
    "notes": None,
}


class LatencyApp:
    def __init__(self, latency_s: float):
        self.latency_s = latency_s
        self.served = 0
        self.in_flight = 0
        self.max_in_flight = 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path, method = scope["path"], scope["method"]
        if method == "GET" and path.endswith("/stats"):
            return await _json(send, 200, {"served": self.served, "max_in_flight": self.max_in_flight})
        if method == "POST" and path.endswith("/reset"):
            self.served = self.max_in_flight = 0
            return await _json(send, 200, {"ok": True})
        if method != "POST" or not path.endswith("/chat/completions"):
            return await _json(send, 404, {"error": {"message": f"no route {method} {path}", "type": "invalid_request_error"}})
        request = json.loads(body or b"{}")
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
        finally:
            self.in_flight -= 1
        self.served += 1
        prompt = sum(len(m.get("content", "")) for m in request.get("messages", [])) // 4
        await _json(send, 200, {
            "id": f"chatcmpl-{self.served}", "object": "chat.completion", "created": 0, "model": request.get("model"),
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": json.dumps(ANSWER)}}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": 60, "total_tokens": prompt + 60},
        })


async def _json(send, status: int, body: dict) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(LatencyApp(args.latency_ms / 1000.0), log_level="warning", access_log=False,
                            backlog=2048, timeout_keep_alive=30)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
