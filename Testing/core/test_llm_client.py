"""The LLM transport (radagent.llm): both chat APIs, structured-output dialects, retries, caps, privacy,
the audit log, dry runs and reply parsing — against a scripted loopback server."""

from __future__ import annotations

import base64
import json
import time

import pytest
from llm_server import scripted_server

from radagent.errors import InputError
from radagent.llm.client import (
    API_KEY_VARIABLE,
    LLMBudgetError,
    LLMClient,
    LLMDryRunError,
    LLMError,
    LLMSettings,
    Message,
    check_endpoint_host,
    read_audit_log,
)
from radagent.llm.replies import ReplyError, extract_json, validated_reply

SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000005000127fd2c870000000049454e44ae426082"
)


def _client(url: str, **values) -> tuple[LLMClient, list[float]]:
    slept: list[float] = []
    settings = LLMSettings(url=url, model="scripted", **values)
    return LLMClient(settings, sleep=slept.append), slept


def test_openai_requests_carry_png_images_and_the_schema_and_a_key_only_when_set(monkeypatch):
    with scripted_server([{"text": '{"ok": true}'}]) as server:
        client, _ = _client(f"{server.url}/v1")
        monkeypatch.delenv(API_KEY_VARIABLE, raising=False)
        reply = client.chat([Message("system", "be brief"), Message("user", "look", (PNG,))], SCHEMA)
        monkeypatch.setenv(API_KEY_VARIABLE, "sk-secret-test")
        client.chat([Message("user", "again")], SCHEMA)
    assert reply.text == '{"ok": true}' and (reply.prompt_tokens, reply.completion_tokens) == (50, 10)
    assert server.paths == ["/v1/chat/completions", "/v1/chat/completions"]
    first = server.requests[0]
    assert first["response_format"]["type"] == "json_schema"
    assert first["response_format"]["json_schema"]["schema"] == SCHEMA
    image = first["messages"][1]["content"][1]["image_url"]["url"]
    assert image.startswith("data:image/png;base64,") and base64.b64decode(image.split(",")[1]) == PNG
    assert first["temperature"] == 0.0 and first["seed"] == 0
    assert "Authorization" not in server.headers[0]
    assert server.headers[1]["Authorization"] == "Bearer sk-secret-test"
    assert client.usage()["calls"] == 2 and client.usage()["endpoint_on_this_machine"]


def test_ollama_requests_carry_raw_base64_images_and_the_schema_as_format():
    with scripted_server([{"text": '{"ok": false}'}]) as server:
        client, _ = _client(server.url, api="ollama")
        client.chat([Message("user", "look", (PNG,))], SCHEMA)
    body = server.requests[0]
    assert server.paths == ["/api/chat"] and body["stream"] is False and body["format"] == SCHEMA
    assert base64.b64decode(body["messages"][0]["images"][0]) == PNG
    assert body["options"]["temperature"] == 0.0


def test_a_server_refusing_a_dialect_gets_the_next_and_the_client_remembers():
    def refuse_json_schema(body):
        kind = (body.get("response_format") or {}).get("type")
        if kind == "json_schema":
            return {"status": 500, "text": "unsupported response_format"}  # as llama-cpp-python's server
        return {"text": '{"ok": true}'}

    with scripted_server([refuse_json_schema]) as server:
        client, slept = _client(f"{server.url}/v1")
        client.chat([Message("user", "a")], SCHEMA)
        client.chat([Message("user", "b")], SCHEMA)
    kinds = [(r.get("response_format") or {}).get("type") for r in server.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]
    assert server.requests[1]["response_format"]["schema"] == SCHEMA and slept == []
    assert client.dialect == "json_object_schema"


def test_the_dialect_is_fixed_once_a_call_succeeded_and_other_errors_are_not_negotiated():
    script = [
        {"text": '{"ok": true}'},
        {"status": 500, "text": "response_format: out of memory"},  # after a success: a server error
        {"text": '{"ok": true}'},
    ]
    with scripted_server(script) as server:
        client, slept = _client(f"{server.url}/v1")
        client.chat([Message("user", "a")], SCHEMA)
        client.chat([Message("user", "b")], SCHEMA)
    assert client.dialect == "json_schema" and len(slept) == 1  # retried in the same dialect
    assert {(r.get("response_format") or {}).get("type") for r in server.requests} == {"json_schema"}
    with scripted_server([{"status": 400, "text": "prompt is longer than the context"}]) as server:
        client, _ = _client(f"{server.url}/v1")
        with pytest.raises(LLMError, match=r"refused the request .*longer than the context"):
            client.chat([Message("user", "a")], SCHEMA)
    assert len(server.requests) == 1 and client.dialect == "json_schema"


def test_rate_limits_and_server_errors_are_retried_with_backoff_then_given_up():
    script = [
        {"status": 429, "text": "slow down", "headers": {"Retry-After": "0.25"}},
        {"text": '{"ok": true}'},
    ]
    with scripted_server(script) as server:
        client, slept = _client(f"{server.url}/v1")
        client.dialect_index = 3  # no structured output: errors are the server's, not the dialect's
        client.chat([Message("user", "a")], SCHEMA)
    assert slept == [0.25] and len(server.requests) == 2
    with scripted_server([{"status": 503, "text": "down"}]) as server:
        client, slept = _client(f"{server.url}/v1", max_attempts=3)
        client.dialect_index = 3
        with pytest.raises(LLMError, match=r"failed after 3 attempts \(HTTP 503"):
            client.chat([Message("user", "a")], SCHEMA)
    assert len(server.requests) == 3 and len(slept) == 2 and slept[1] > slept[0]  # exponential, with jitter


def test_timeouts_are_retried_and_bounded():
    with scripted_server([{"text": '{"ok": true}', "delay_s": 1.0}]) as server:
        client, slept = _client(f"{server.url}/v1", timeout_s=0.2, max_attempts=2)
        start = time.perf_counter()
        with pytest.raises(LLMError, match=r"failed after 2 attempts .*Timeout"):
            client.chat([Message("user", "a")], SCHEMA)
    assert time.perf_counter() - start < 5 and len(slept) == 1


def test_a_refused_request_is_not_retried():
    with scripted_server([{"status": 404, "text": "model 'nope' not found"}]) as server:
        client, slept = _client(server.url, api="ollama")
        client.dialect_index = 2
        with pytest.raises(LLMError, match=r"refused the request .*HTTP 404"):
            client.chat([Message("user", "a")], SCHEMA)
    assert len(server.requests) == 1 and slept == []


def test_spending_caps_stop_the_run():
    with scripted_server([{"text": '{"ok": true}', "usage": (900, 200)}]) as server:
        client, _ = _client(f"{server.url}/v1", max_calls=2, max_total_tokens=5000)
        client.chat([Message("user", "a")], SCHEMA)
        client.chat([Message("user", "b")], SCHEMA)
        with pytest.raises(LLMBudgetError, match="cap of 2 LLM calls"):
            client.chat([Message("user", "c")], SCHEMA)
        client, _ = _client(f"{server.url}/v1", max_total_tokens=1400, max_tokens=400)
        client.chat([Message("user", "a")], SCHEMA)  # 1100 used: the next call could need 400 + its prompt
        with pytest.raises(LLMBudgetError, match=r"would pass the run's cap of 1400 tokens \(used 1100\)"):
            client.chat([Message("user", "b")], SCHEMA)
    assert len(server.requests) == 3  # the refused calls were never sent


def test_remote_endpoints_are_refused_before_any_connection_and_loopback_ignores_proxies(monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("the check must not touch the network")

    with monkeypatch.context() as patched:
        patched.setattr(socket, "create_connection", no_network)
        patched.setattr(socket.socket, "connect", no_network)
        for url in ("http://10.255.255.1:9/v1", "https://llm.example.org/v1", "http://127.0.0.1.nip.io/v1"):
            with pytest.raises(InputError, match=r"not a loopback address .*--llm-allow-remote"):
                LLMClient(LLMSettings(url=url, model="m"))
        assert check_endpoint_host("http://10.255.255.1:9/v1", allow_remote=True) is False
        assert check_endpoint_host("http://[::1]:9/v1", allow_remote=False) is True
    assert check_endpoint_host("http://localhost:9/v1", allow_remote=False) is True
    with pytest.raises(InputError, match="must not carry a user name or password"):
        LLMSettings(url="http://user:pw@127.0.0.1:9/v1", model="m")
    with pytest.raises(InputError, match="temperature must be a finite number"):
        LLMSettings(url="http://127.0.0.1:9/v1", model="m", temperature=float("nan"))
    monkeypatch.setenv("HTTP_PROXY", "http://10.255.255.1:9")
    monkeypatch.setenv("http_proxy", "http://10.255.255.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with scripted_server([{"text": '{"ok": true}'}]) as server:
        client, _ = _client(f"{server.url}/v1", timeout_s=5.0, max_attempts=1)
        assert client.chat([Message("user", "a")], SCHEMA).text == '{"ok": true}'


def test_the_audit_log_records_every_call_without_images_or_the_key(tmp_path, monkeypatch):
    monkeypatch.setenv(API_KEY_VARIABLE, "sk-never-logged")
    log = tmp_path / "audit.jsonl"
    script = [{"status": 500, "text": "key sk-never-logged is over quota"}, {"text": '{"ok": true}'}]
    with scripted_server(script) as server:
        client, _ = _client(f"{server.url}/v1", log_path=str(log))
        client.chat([Message("user", "look", (PNG,))], SCHEMA)
    text = log.read_text()
    assert "sk-never-logged" not in text and base64.b64encode(PNG).decode() not in text
    assert "[API key] is over quota" in text  # the server's words, with the key redacted
    records = [json.loads(line) for line in text.splitlines()]
    assert [r["event"] for r in records] == ["run", "failed_attempt", "call"]
    assert records[0]["model"] == "scripted" and records[0]["temperature"] == 0.0
    (call,) = read_audit_log(log)
    image = call["request"]["messages"][0]["images"][0]
    assert image["bytes"] == len(PNG) and len(image["sha256"]) == 64
    assert call["reply"]["text"] == '{"ok": true}' and call["endpoint"] == f"{server.url}/v1"
    with scripted_server([{"text": '{"ok": true}'}]) as server:  # a second run into the same log
        client, _ = _client(f"{server.url}/v1", log_path=str(log))
        client.chat([Message("user", "look", (PNG,))], SCHEMA)
    with pytest.raises(InputError, match="holds 2 runs; replay needs the log of one run"):
        read_audit_log(log)


def test_credential_errors_and_odd_replies_end_in_one_clear_error(monkeypatch):
    monkeypatch.setenv(API_KEY_VARIABLE, "sk-abcdef-1234")
    script = [{"status": 401, "text": "Incorrect API key provided: sk-abc***1234"}]
    with scripted_server(script) as server:
        client, _ = _client(f"{server.url}/v1")
        with pytest.raises(LLMError) as refused:
            client.chat([Message("user", "a")], SCHEMA)
    assert "refused the credentials" in str(refused.value) and "1234" not in str(refused.value)

    class Html:
        ok, status_code, text = True, 200, "<html>proxy login</html>"

        def json(self):
            raise ValueError("not JSON")

    client, _ = _client("http://127.0.0.1:9/v1")
    monkeypatch.setattr(client.session, "get", lambda *args, **kwargs: Html())
    with pytest.raises(LLMError, match=r"model list .* is not the expected JSON"):
        client.list_models()


def test_a_dry_run_writes_the_prompt_and_sends_nothing(tmp_path):
    client, _ = _client("http://127.0.0.1:9/v1", dry_run_dir=str(tmp_path / "dry"))
    with pytest.raises(LLMDryRunError, match="nothing was sent"):
        client.chat([Message("system", "rules"), Message("user", "look", (PNG,))], SCHEMA)
    prompt = (tmp_path / "dry" / "prompt.txt").read_text()
    assert "--- system ---\nrules" in prompt and '"required": [\n    "ok"' in prompt
    assert (tmp_path / "dry" / "message1-image1.png").read_bytes() == PNG


def test_replies_in_prose_fences_or_cut_off_are_read_or_explained():
    assert extract_json('{"ok": true}') == {"ok": True}
    assert extract_json('Sure! Here it is:\n```json\n{"ok": false}\n```\nHope that helps.') == {"ok": False}
    assert extract_json('I think {"ok": true} is right.') == {"ok": True}
    assert extract_json('{"ok": true, "why": "a raw\nline break"}')["why"] == "a raw\nline break"  # SmolLM2
    with pytest.raises(ReplyError, match="cut off"):
        extract_json('{"ok": tr')
    with pytest.raises(ReplyError, match="no JSON object"):
        extract_json("I cannot help with that.")
    with pytest.raises(ReplyError, match="the reply: 'ok' is a required property"):
        validated_reply('{"fine": 1}', SCHEMA)
    with pytest.raises(ReplyError, match="ok: 'yes' is not of type 'boolean'"):
        validated_reply('{"ok": "yes"}', SCHEMA)


def test_the_local_server_gets_thread_counts_only_when_asked(capsys, monkeypatch):
    """``llm serve --threads N`` sets llama.cpp's generation and prompt threads; without it the server's
    defaults stay, and a count below 1 is refused before anything starts."""
    from pathlib import Path

    import radagent.llm.local
    from radagent.cli import main
    from radagent.llm.local import local_server_command

    plain = local_server_command(8089, 4096, Path("model.gguf"))
    assert plain[1:3] == ["-m", "llama_cpp.server"] and plain[plain.index("--host") + 1] == "127.0.0.1"
    assert plain[plain.index("--port") + 1] == "8089" and plain[plain.index("--n_ctx") + 1] == "4096"
    assert not any(argument.startswith("--n_threads") for argument in plain)
    one = local_server_command(8089, 4096, Path("model.gguf"), threads=1)
    assert one == [*plain, "--n_threads", "1", "--n_threads_batch", "1"]

    served = []  # the CLI's call, recorded instead of replacing this process by a server
    monkeypatch.setattr(
        radagent.llm.local, "serve_local_model", lambda *arguments: served.append(arguments) or 0
    )
    assert main(["llm", "serve", "--port", "8091", "--threads", "3"]) == 0
    assert served == [(8091, 8192, None, 3)]
    assert main(["llm", "serve", "--threads", "0"]) == 2 and len(served) == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert lines == ["radagent: error: argument --threads: must be at least 1, got 0"]


def test_llama_cpp_reads_the_thread_flags_as_its_thread_settings():
    """The flags are llama-cpp-python's own: its server's parser turns them into both thread settings."""
    import argparse
    from pathlib import Path

    pytest.importorskip("llama_cpp.server.settings")
    from llama_cpp.server.cli import add_args_from_model, parse_model_from_args
    from llama_cpp.server.settings import ModelSettings, Settings

    from radagent.llm.local import local_server_command

    parser = argparse.ArgumentParser()
    add_args_from_model(parser, Settings)
    command = local_server_command(8089, 4096, Path("model.gguf"), threads=1)
    settings = parse_model_from_args(ModelSettings, parser.parse_args(command[3:]))
    assert (settings.n_threads, settings.n_threads_batch, settings.n_ctx) == (1, 1, 4096)
    assert settings.model == "model.gguf" and settings.model_alias == "smollm2"
