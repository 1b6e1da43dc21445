"""A thin transport to chat LLMs over HTTP (``requests``): OpenAI-compatible chat completions (OpenAI, Azure,
vLLM, llama.cpp, LM Studio, Ollama's ``/v1``) and Ollama's native ``/api/chat``. It knows endpoints,
structured-output dialects, retries, spending caps and the audit log — nothing about planning.

Privacy by default: only a loopback address, or ``localhost`` when every address it resolves to is loopback,
counts as this machine; any other endpoint (every other host name included: no DNS answer makes a name
local) is refused before any connection unless ``allow_remote`` is set. Loopback calls ignore proxy
environment variables (requests would otherwise route 127.0.0.1 through ``HTTP_PROXY``). The API key comes
from ``RADAGENT_LLM_API_KEY`` (or the caller's memory) and is never stored, logged or written, and is
redacted from the server's error messages: the audit log holds the request body (images replaced by their
SHA-256 and size), the reply and the usage, not the headers.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import json
import math
import os
import random
import socket
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import requests

from radagent.errors import InputError
from radagent.llm.prompts import estimated_tokens

__all__ = [
    "API_KEY_VARIABLE",
    "LLMBudgetError",
    "LLMClient",
    "LLMDryRunError",
    "LLMError",
    "LLMReply",
    "LLMSettings",
    "Message",
    "check_endpoint_host",
    "read_audit_log",
]

API_KEY_VARIABLE = "RADAGENT_LLM_API_KEY"
ApiKind = Literal["openai", "ollama"]
# Structured-output dialects, most to least strict. Until a call succeeds, a server that refuses one
# (HTTP 400/422/500 naming the response format) is asked with the next; the first that works is kept.
_DIALECTS: dict[str, tuple[str, ...]] = {
    "openai": ("json_schema", "json_object_schema", "json_object", "none"),
    "ollama": ("format_schema", "format_json", "none"),
}
_NEGOTIABLE = (400, 422, 500)
_FORMAT_WORDS = ("response_format", "json_schema", "schema", "format", "json")
_RETRYABLE = (requests.Timeout, requests.ConnectionError, requests.exceptions.ChunkedEncodingError)
_MAX_DELAY_S = 30.0


class LLMError(RuntimeError):
    """The endpoint failed (unreachable, refused, or erring after all retries); the message says how."""


class LLMBudgetError(LLMError):
    """A spending cap of the run (calls or tokens) is reached."""


class LLMDryRunError(LLMError):
    """A dry run wrote the prompt it would have sent and stopped."""


@dataclass(frozen=True)
class LLMSettings:
    """Where and how to ask: endpoint, model and API kind; sampling; time and spending limits; privacy."""

    url: str
    model: str
    api: ApiKind = "openai"
    temperature: float = 0.0
    seed: int | None = 0
    max_tokens: int = 400  # of one reply
    timeout_s: float = 120.0  # of one HTTP request
    max_attempts: int = 4  # per call, counting retries after 429, 5xx, timeouts and connection errors
    max_retry_s: float = 60.0  # waiting between attempts, per call
    allow_remote: bool = False  # send renderings and numbers to a host off this machine
    max_calls: int | None = None  # per run (paid endpoints)
    max_total_tokens: int | None = None  # prompt + completion, per run
    log_path: str | None = None  # audit log, JSON lines
    dry_run_dir: str | None = None  # write the first prompt here instead of sending it
    # The key itself, held in memory only (never logged, never in repr); None: RADAGENT_LLM_API_KEY.
    api_key: str | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.api not in _DIALECTS:
            raise InputError(f"LLM API must be 'openai' or 'ollama', got {self.api!r}")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"LLM URL must be an http(s) address, got {self.url!r}")
        if not self.model:
            raise InputError("name the LLM model")
        if parts.username or parts.password:
            raise InputError(
                f"LLM URL must not carry a user name or password; give a key in {API_KEY_VARIABLE}"
            )
        if self.max_attempts < 1 or not self.timeout_s > 0 or self.max_tokens < 1:
            raise InputError("LLM attempts, timeout and reply tokens must be positive")
        if not math.isfinite(self.timeout_s) or not math.isfinite(self.max_retry_s) or self.max_retry_s < 0:
            raise InputError("LLM timeout and retry time must be finite, the retry time not negative")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise InputError(f"LLM temperature must be a finite number ≥ 0, got {self.temperature}")


@dataclass(frozen=True)
class Message:
    """One chat message: role, text and PNG images."""

    role: Literal["system", "user", "assistant"]
    text: str
    images: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class LLMReply:
    """A reply's text, token usage and latency, and the structured-output dialect it came with."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    dialect: str


def check_endpoint_host(url: str, allow_remote: bool) -> bool:
    """True when ``url``'s host is on this machine: a loopback address, or ``localhost`` with every address
    it resolves to loopback. Any other host (every other name: a DNS answer could change between this check
    and the connection) is an InputError unless ``allow_remote``. Checked before anything connects."""
    host = urlsplit(url).hostname or ""
    if _is_loopback_host(host) or allow_remote:
        return _is_loopback_host(host)
    raise InputError(
        f"the LLM endpoint {host!r} is not a loopback address of this machine; renderings and plan numbers "
        "would leave it. Allow that explicitly (--llm-allow-remote; in Slicer, Allow remote)"
    )


def _is_loopback_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        pass
    if host.lower().rstrip(".") != "localhost":
        return False
    try:  # the hosts file, not the network, answers for localhost
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def _image_record(png: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(png).hexdigest(), "bytes": len(png)}


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def read_audit_log(path: str | Path) -> list[dict[str, Any]]:
    """The call records of an audit log of one run, in order (a log holding several runs is refused:
    replay must not mix them)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"LLM audit log {path} does not exist")
    try:
        records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise InputError(f"LLM audit log {path} is not JSON lines: {error.msg}") from None
    runs = sum(1 for r in records if r.get("event") == "run")
    if runs > 1:
        raise InputError(f"LLM audit log {path} holds {runs} runs; replay needs the log of one run")
    return [r for r in records if r.get("event") == "call"]


@dataclass
class LLMClient:
    """Chat calls to one endpoint, with what a run spent: calls, tokens and latencies."""

    settings: LLMSettings
    replay: Sequence[dict[str, Any]] | None = None  # audit-log records answered instead of the endpoint
    sleep: Callable[[float], None] = time.sleep
    session: requests.Session | None = None
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latencies_s: list[float] = field(default_factory=list)
    dialect_index: int = 0  # into _DIALECTS[api]: the most structured dialect the server accepted so far
    settled: bool = False  # a call succeeded: the dialect is fixed from then on

    def __post_init__(self) -> None:
        self.loopback = True
        if self.replay is None and self.settings.dry_run_dir is None:
            self.loopback = check_endpoint_host(self.settings.url, self.settings.allow_remote)
        if self.session is None:
            self.session = requests.Session()
            self.session.trust_env = not self.loopback  # proxies never see a loopback call
        self._random = random.Random(self.settings.seed or 0)
        self._run_logged = False

    @property
    def dialect(self) -> str:
        """The structured-output dialect the next call uses."""
        return _DIALECTS[self.settings.api][self.dialect_index]

    # -- one call ------------------------------------------------------------------------------------

    def chat(self, messages: Sequence[Message], schema: dict[str, Any]) -> LLMReply:
        """Send ``messages`` asking for JSON under ``schema``; retries and dialect fallback included."""
        s = self.settings
        if s.max_calls is not None and self.calls >= s.max_calls:
            raise LLMBudgetError(f"the run reached its cap of {s.max_calls} LLM calls")
        used = self.prompt_tokens + self.completion_tokens
        text = "".join(m.text for m in messages)
        next_call = estimated_tokens(text, sum(len(m.images) for m in messages)) + s.max_tokens
        if s.max_total_tokens is not None and used + next_call > s.max_total_tokens:
            raise LLMBudgetError(
                f"the next LLM call (up to ≈{next_call} tokens) would pass the run's cap of "
                f"{s.max_total_tokens} tokens (used {used})"
            )
        if s.dry_run_dir is not None:
            self._write_dry_run(messages, schema)
        reply = self._replayed(messages, schema) if self.replay is not None else self._sent(messages, schema)
        self.calls += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        self.latencies_s.append(reply.latency_s)
        return reply

    def usage(self) -> dict[str, Any]:
        """What the run spent, for the result and the comparison tables."""
        return {
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "seconds_per_call": sum(self.latencies_s) / len(self.latencies_s) if self.latencies_s else None,
            "structured_output": self.dialect,
            "endpoint": _without_credentials(self.settings.url),
            "endpoint_on_this_machine": self.loopback,
            "model": self.settings.model,
            "api": self.settings.api,
            "temperature": self.settings.temperature,
            "seed": self.settings.seed,
        }

    def _sent(self, messages: Sequence[Message], schema: dict[str, Any]) -> LLMReply:
        s = self.settings
        attempts, waited, failure = 0, 0.0, ""
        while True:
            attempts += 1
            payload = self._payload(messages, schema)
            start = time.perf_counter()
            delay: float | None = None
            try:
                response = self.session.post(  # type: ignore[union-attr]
                    self._chat_url(), json=payload, headers=self._headers(), timeout=s.timeout_s
                )
            except _RETRYABLE as error:
                failure = self._redacted(f"{type(error).__name__}: {str(error)[:200]}")
                self._log(payload, messages, None, None, attempts, failure)
            except requests.RequestException as error:  # a bad URL, redirect loop, …: retrying won't help
                failure = self._redacted(f"{type(error).__name__}: {str(error)[:200]}")
                self._log(payload, messages, None, None, attempts, failure)
                raise LLMError(f"the LLM request failed ({failure})") from None
            else:
                latency = time.perf_counter() - start
                if response.ok:
                    reply = self._parsed(response, latency)
                    self.settled = True
                    self._log(payload, messages, response.status_code, reply, attempts)
                    return reply
                failure = self._failure(response)
                self._log(payload, messages, response.status_code, None, attempts, failure)
                if self._refuses_dialect(response):
                    self.dialect_index += 1  # the server does not speak this dialect: try the next
                    attempts -= 1
                    continue
                if response.status_code != 429 and response.status_code < 500:
                    raise LLMError(f"the LLM endpoint refused the request ({failure})")
                delay = _retry_after_s(response)
            if delay is None:
                delay = min(_MAX_DELAY_S, 2.0 ** (attempts - 1)) * (1.0 + 0.5 * self._random.random())
            if attempts >= s.max_attempts or waited + delay > s.max_retry_s:
                raise LLMError(f"the LLM endpoint failed after {attempts} attempts ({failure})")
            self.sleep(delay)
            waited += delay

    def _refuses_dialect(self, response: requests.Response) -> bool:
        """Before any call succeeded: an error status whose message names the response format."""
        if self.settled or self.dialect == "none" or response.status_code not in _NEGOTIABLE:
            return False
        return any(word in response.text.lower() for word in _FORMAT_WORDS)

    def _failure(self, response: requests.Response) -> str:
        """An HTTP error for messages and the log: the server's words, except for credential errors
        (which may echo the key), and never the key itself."""
        if response.status_code in (401, 403):
            return f"HTTP {response.status_code}: the endpoint refused the credentials"
        return self._redacted(f"HTTP {response.status_code}: {response.text[:200]}")

    def _redacted(self, text: str) -> str:
        key = self._key()
        return text.replace(key, "[API key]") if key else text

    def _key(self) -> str | None:
        return self.settings.api_key or os.environ.get(API_KEY_VARIABLE) or None

    def _chat_url(self) -> str:
        base = self.settings.url.rstrip("/")
        return f"{base}/chat/completions" if self.settings.api == "openai" else f"{base}/api/chat"

    def _headers(self) -> dict[str, str]:
        key = self._key()
        return {"Authorization": f"Bearer {key}"} if key else {}

    def _payload(self, messages: Sequence[Message], schema: dict[str, Any]) -> dict[str, Any]:
        s = self.settings
        if s.api == "ollama":
            payload: dict[str, Any] = {
                "model": s.model,
                "stream": False,
                "messages": [_ollama_message(m) for m in messages],
                "options": {"temperature": s.temperature, "num_predict": s.max_tokens, **_seed(s)},
            }
            if self.dialect == "format_schema":
                payload["format"] = schema
            elif self.dialect == "format_json":
                payload["format"] = "json"
            return payload
        payload = {
            "model": s.model,
            "messages": [_openai_message(m) for m in messages],
            "temperature": s.temperature,
            "max_tokens": s.max_tokens,
            **_seed(s),
        }
        if self.dialect == "json_schema":
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "reply", "schema": schema, "strict": True},
            }
        elif self.dialect == "json_object_schema":
            payload["response_format"] = {"type": "json_object", "schema": schema}
        elif self.dialect == "json_object":
            payload["response_format"] = {"type": "json_object"}
        return payload

    def _parsed(self, response: requests.Response, latency: float) -> LLMReply:
        try:
            body = response.json()
            if self.settings.api == "ollama":
                text = body["message"]["content"]
                usage = (body.get("prompt_eval_count") or 0, body.get("eval_count") or 0)
            else:
                text = body["choices"][0]["message"]["content"] or ""
                counts = body.get("usage") or {}
                usage = (counts.get("prompt_tokens") or 0, counts.get("completion_tokens") or 0)
        except (ValueError, KeyError, IndexError, TypeError):
            text = self._redacted(response.text[:200])
            raise LLMError(f"the LLM endpoint's reply is no chat completion: {text}") from None
        return LLMReply(str(text), int(usage[0]), int(usage[1]), latency, self.dialect)

    # -- audit log, dry run, replay ------------------------------------------------------------------

    def _record(self, messages: Sequence[Message]) -> list[dict[str, Any]]:
        return [
            {"role": m.role, "text": m.text, "images": [_image_record(i) for i in m.images]} for m in messages
        ]

    def _log(
        self,
        payload: dict[str, Any],
        messages: Sequence[Message],
        status: int | None,
        reply: LLMReply | None,
        attempt: int,
        error: str = "",
    ) -> None:
        if self.settings.log_path is None:
            return
        path = Path(self.settings.log_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not self._run_logged:  # one header per run: replay refuses a log that mixes runs
            s = self.settings
            header = {
                "event": "run",
                "run_id": uuid.uuid4().hex,
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "api": s.api,
                "endpoint": _without_credentials(s.url),
                "model": s.model,
                "temperature": s.temperature,
                "seed": s.seed,
                "max_tokens": s.max_tokens,
            }
            with path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(header) + "\n")
            self._run_logged = True
        options = {k: v for k, v in payload.items() if k not in ("messages",)}
        record = {
            "event": "call" if reply is not None else "failed_attempt",
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "api": self.settings.api,
            "endpoint": _without_credentials(self.settings.url),
            "model": self.settings.model,
            "attempt": attempt,
            "status": status,
            "request": {"messages": self._record(messages), **options},
            "request_sha256": _digest(self._record(messages)),
        }
        if reply is not None:
            record["reply"] = {
                "text": reply.text,
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "latency_s": round(reply.latency_s, 4),
                "dialect": reply.dialect,
            }
        if error:
            record["error"] = error
        with path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def _write_dry_run(self, messages: Sequence[Message], schema: dict[str, Any]) -> None:
        folder = Path(self.settings.dry_run_dir or ".")
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for n, message in enumerate(messages):
            lines.append(f"--- {message.role} ---\n{message.text}")
            for m, png in enumerate(message.images, start=1):
                name = f"message{n}-image{m}.png"
                (folder / name).write_bytes(png)
                lines.append(f"[image {name}: {_image_record(png)['sha256'][:12]}…, {len(png)} bytes]")
        lines.append(f"--- reply schema ---\n{json.dumps(schema, indent=2)}")
        (folder / "prompt.txt").write_text("\n\n".join(lines) + "\n")
        raise LLMDryRunError(f"dry run: the prompt it would send is in {folder} (nothing was sent)")

    def _replayed(self, messages: Sequence[Message], schema: dict[str, Any]) -> LLMReply:
        assert self.replay is not None
        if self.calls >= len(self.replay):
            raise LLMError(f"the replayed audit log holds {len(self.replay)} calls; this run asks for more")
        record = self.replay[self.calls]
        if record.get("request_sha256") != _digest(self._record(messages)):
            raise LLMError(
                f"call {self.calls + 1} asks other than the audit log recorded: not that run's replay"
            )
        reply = record["reply"]
        tokens = (reply["prompt_tokens"], reply["completion_tokens"])
        return LLMReply(reply["text"], *tokens, 0.0, reply.get("dialect", "replay"))

    # -- what an endpoint offers ---------------------------------------------------------------------

    def list_models(self) -> list[str]:
        """The models the endpoint lists (GET /models, Ollama's /api/tags)."""
        base = self.settings.url.rstrip("/")
        url = f"{base}/models" if self.settings.api == "openai" else f"{base}/api/tags"
        try:
            response = self.session.get(url, headers=self._headers(), timeout=self.settings.timeout_s)  # type: ignore[union-attr]
        except requests.RequestException as error:
            raise LLMError(f"the LLM endpoint {base} cannot be reached ({type(error).__name__})") from None
        if not response.ok:
            raise LLMError(f"the LLM endpoint answered HTTP {response.status_code} to {url}")
        try:
            body = response.json()
            entries = body.get("models", []) if self.settings.api == "ollama" else body.get("data", [])
            return [str(m.get("name" if self.settings.api == "ollama" else "id", "")) for m in entries]
        except (ValueError, AttributeError, TypeError):
            raise LLMError(f"the LLM endpoint's model list at {url} is not the expected JSON") from None


def _seed(settings: LLMSettings) -> dict[str, int]:
    return {"seed": settings.seed} if settings.seed is not None else {}


def _ollama_message(message: Message) -> dict[str, Any]:
    images = {"images": [_b64(png) for png in message.images]} if message.images else {}
    return {"role": message.role, "content": message.text, **images}


def _openai_message(message: Message) -> dict[str, Any]:
    if not message.images:
        return {"role": message.role, "content": message.text}
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.text}]
    for png in message.images:
        parts.append({"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_b64(png)}"}})
    return {"role": message.role, "content": parts}


def _retry_after_s(response: requests.Response) -> float | None:
    """The server's Retry-After (seconds or an HTTP date), if it sent one."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return max(0.0, when.timestamp() - time.time())


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"
