"""``edge collect --http`` (or ``edge dashboard``) as a real process; plain HTTP reads of what it serves."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
EDGE = [sys.executable, "-m", "edge"]


class HttpProcess:
    """An ``edge collect``/``edge dashboard`` process serving HTTP on a free port of 127.0.0.1."""

    def __init__(self, command: str, mqtt: str, db: str | Path, *extra: str, token: str | None = None,
                 log: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        args = [*EDGE, command, "--mqtt", mqtt, "--db", str(db), "--http", f"127.0.0.1:{self.port}", *extra]
        if token:
            args += ["--http-token", token]
        self.log = log
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.DEVNULL, text=True,
            stderr=open(log, "w") if log else subprocess.PIPE,  # noqa: SIM115 (closed with the process)
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.get("/healthz", raw=True) == b"ok\n":
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"edge {command} --http did not start: {self.stderr()}")
            time.sleep(0.1)

    def stderr(self) -> str:
        if self.log:
            return self.log.read_text()
        return self.proc.stderr.read() if self.proc.stderr and self.proc.poll() is not None else ""

    def get(self, path: str, *, raw: bool = False, headers: dict[str, str] | None = None) -> Any:
        request = urllib.request.Request(self.url + path, headers=headers or {})
        if self.token and headers is None:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return body if raw else json.loads(body)

    def status(self, path: str, headers: dict[str, str] | None = None) -> int:
        try:
            with urllib.request.urlopen(urllib.request.Request(self.url + path, headers=headers or {}),
                                        timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
