"""llama.cpp's OpenAI-compatible server (``llama-cpp-python[server]``) as a test fixture and a
benchmark helper: find its Python, start it on a free port of 127.0.0.1, wait until it
answers, stop it (or kill it) and start it again on the same port.

The server lives in its own virtual environment (``make test-served`` builds ``.venv-llama``;
the first build compiles llama.cpp). Its Python is ``$REALSPO_LLAMA_PYTHON``, else
``.venv-llama/bin/python`` at the repository root, else this interpreter if it has
``llama_cpp.server``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIRE_ENV = "REALSPO_REQUIRE_LLAMA_SERVER"
KEY = "realspo-test-key-5d1e"  # the test server's --api_key; clients read it from KEY_ENV
KEY_ENV = "REALSPO_TEST_SERVER_KEY"
ALIAS = "smollm2"


def server_python() -> str | None:
    """The Python that runs ``llama_cpp.server``, or None when there is none."""
    named = os.environ.get("REALSPO_LLAMA_PYTHON")
    if named:
        return named
    local = ROOT / ".venv-llama" / "bin" / "python"
    if local.exists():
        return str(local)
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        return None
    return sys.executable


def require_server_python() -> str:
    """:func:`server_python`, else skip the test (fail under ``REALSPO_REQUIRE_LLAMA_SERVER=1``)."""
    import pytest

    python = server_python()
    if python is None:
        message = ("no llama.cpp server: set REALSPO_LLAMA_PYTHON or run `make test-served` "
                   "(pip install 'llama-cpp-python[server]' into .venv-llama)")
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return python


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LlamaServer:
    """One ``llama_cpp.server`` process serving ``model`` as ``alias`` on one thread."""

    def __init__(self, python: str, model: str, *, alias: str = "smollm2", api_key: str | None = None,
                 embedding: bool = False, threads: int = 1, log: Path | None = None) -> None:
        self.python, self.model, self.alias, self.api_key = python, model, alias, api_key
        self.embedding, self.threads, self.port = embedding, threads, free_port()
        self.log = log
        self.process: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, wait: bool = True) -> LlamaServer:
        command = [self.python, "-m", "llama_cpp.server", "--model", self.model, "--host",
                   "127.0.0.1", "--port", str(self.port), "--n_threads", str(self.threads),
                   "--n_threads_batch", str(self.threads), "--model_alias", self.alias,
                   "--n_ctx", "2048", "--verbose", "False"]
        if self.api_key:
            command += ["--api_key", self.api_key]
        if self.embedding:
            command += ["--embedding", "True"]
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "OMP_NUM_THREADS": str(self.threads)}
        self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, limit: float = 180.0) -> None:
        """Poll ``GET /models`` until the server answers (any HTTP status counts)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"llama.cpp server exited with {self.process.returncode}")
            try:
                urllib.request.urlopen(f"{self.base_url}/models", timeout=2)  # noqa: S310
                return
            except urllib.error.HTTPError:
                return  # it answers (e.g. 401 without the key)
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"llama.cpp server did not answer within {limit:.0f} s")

    def stop(self, kill: bool = False) -> None:
        """End the server: SIGKILL (``kill``, as a crash) or SIGTERM, and wait for it."""
        if self.process is None:
            return
        self.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
