"""A loopback HTTP server that speaks both chat APIs (OpenAI-compatible ``/v1/chat/completions`` and
Ollama's ``/api/chat``) and answers from a script, recording every request it gets, for the LLM tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = dict[str, Any]  # {"status": 200, "text": "...", "headers": {...}, "delay_s": 0}


@dataclass
class ScriptedServer:
    """What the server answers, in order (the last one repeats), and what it was asked."""

    script: list[Reply | Callable[[dict[str, Any]], Reply]]
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    url: str = ""

    def next_reply(self, body: dict[str, Any]) -> Reply:
        index = min(len(self.requests) - 1, len(self.script) - 1)
        reply = self.script[index]
        return reply(body) if callable(reply) else reply


def _handler(server_state: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode() if not isinstance(payload, bytes) else payload
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            server_state.paths.append(self.path)
            if self.path.endswith("/models"):
                self._send(200, {"data": [{"id": "scripted"}]})
            elif self.path.endswith("/api/tags"):
                self._send(200, {"models": [{"name": "scripted"}]})
            else:
                self._send(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            server_state.paths.append(self.path)
            server_state.requests.append(body)
            server_state.headers.append(dict(self.headers))
            reply = server_state.next_reply(body)
            if reply.get("delay_s"):
                threading.Event().wait(reply["delay_s"])
            status = reply.get("status", 200)
            if status != 200:
                self._send(status, {"error": reply.get("text", "scripted error")}, reply.get("headers"))
                return
            text = reply["text"]
            usage = reply.get("usage", (50, 10))
            if self.path.endswith("/api/chat"):
                payload = {
                    "message": {"role": "assistant", "content": text},
                    "prompt_eval_count": usage[0],
                    "eval_count": usage[1],
                    "done": True,
                }
            else:
                payload = {
                    "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]},
                }
            self._send(200, payload)

    return Handler


@contextmanager
def scripted_server(script: list[Reply | Callable[[dict[str, Any]], Reply]]) -> Iterator[ScriptedServer]:
    """Run a scripted server on 127.0.0.1 (a free port) for the ``with`` block."""
    state = ScriptedServer(list(script))
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
