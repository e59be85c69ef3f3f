"""Run ``app.py`` as a background server for tests, and stop it again.

    app = start_app(["--model", str(model_dir), "--data-dir", str(tmp)])
    try:
        ...  # talk to app.url
    finally:
        app.stop()

The child is ``app.py`` itself (no shell in between), so ``proc.pid`` is the server's own pid
and stopping it never touches anything else. Its output goes to a log file whose tail is
shown when the server does not come up.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tools import QUIET_ENV

ROOT = Path(__file__).resolve().parent.parent


def tiny_model(arch: str = "idefics3") -> Path:
    """A tiny random model of a real architecture, built once into .cache/ and reused
    (the directory ``make tiny-model`` uses for idefics3)."""
    from tools.random_models import build

    name = "tiny-smolvlm" if arch == "idefics3" else f"tiny-{arch}"
    return build(arch, ROOT / ".cache" / name)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningApp:
    url: str  # with a trailing slash, e.g. http://127.0.0.1:43121/
    port: int
    proc: subprocess.Popen
    log_path: Path

    def log(self, tail_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail_chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful), then SIGKILL if it lingers; safe to call twice."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)


def start_app(
    args: list[str],
    port: int | None = None,
    env: dict[str, str] | None = None,
    *,
    ready_path: str = "/config",
    timeout: float = 180.0,
    python: str = sys.executable,
) -> RunningApp:
    """Start ``python app.py ARGS --host 127.0.0.1 --port PORT`` and wait until it answers."""
    port = port or free_port()
    log_file = tempfile.NamedTemporaryFile(prefix="app-", suffix=".log", delete=False)
    child_env = {**os.environ, **QUIET_ENV, **(env or {})}
    proc = subprocess.Popen(
        [python, str(ROOT / "app.py"), *args, "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=child_env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    log_file.close()
    app = RunningApp(f"http://127.0.0.1:{port}/", port, proc, Path(log_file.name))
    try:
        _wait_ready(app, ready_path, timeout)
    except BaseException:
        app.stop()
        raise
    return app


def _wait_ready(app: RunningApp, path: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if app.proc.poll() is not None:
            raise RuntimeError(f"app.py exited with {app.proc.returncode}:\n{app.log()}")
        try:
            with urllib.request.urlopen(app.url.rstrip("/") + path, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # e.g. 401 behind --auth: it is up
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"app.py did not answer within {timeout:.0f} s:\n{app.log()}")
