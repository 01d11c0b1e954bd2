"""The demo's child processes: real ``edge`` commands, each in its own process group, logged, stopped cleanly.

``Service(name, argv, logs).start()`` runs one command; its stdout and stderr lines are kept in memory and
written to ``logs/<name>.out`` / ``logs/<name>.err``. ``wait_for(predicate, timeout, what)`` waits for a
line (or a state) with a deadline; ``stop()`` sends SIGTERM and, after a grace period, SIGKILL to the
process group. Nothing here waits without a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

EDGE = (sys.executable, "-m", "edge")


class DemoError(Exception):
    """A step of the demo failed; the message is the one line the user sees."""


class Service:
    """One child process; ``lines["out"]`` / ``lines["err"]`` hold what it printed so far."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        logs: Path,
        *,
        env: dict[str, str] | None = None,
        on_line: Callable[[str, str], None] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.logs = logs
        self.env = env
        self.on_line = on_line
        self.lines: dict[str, list[str]] = {"out": [], "err": []}
        self.changed = threading.Condition()
        self.process: subprocess.Popen[str] | None = None
        self._readers: list[threading.Thread] = []
        self.title = " ".join(display(self.argv)[:2])  # "edge run"

    def start(self) -> Service:
        self.logs.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3", **(self.env or {}))
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the demo only; it stops its children in order
        )
        for stream, pipe in (("out", self.process.stdout), ("err", self.process.stderr)):
            assert pipe is not None
            reader = threading.Thread(
                target=self._read, args=(stream, pipe), name=f"{self.name}-{stream}", daemon=True
            )
            reader.start()
            self._readers.append(reader)
        return self

    def _read(self, stream: str, pipe: IO[str]) -> None:
        with open(self.logs / f"{self.name}.{stream}", "w", encoding="utf-8") as log:
            for raw in pipe:
                line = raw.rstrip("\n")
                log.write(raw)
                log.flush()
                with self.changed:
                    self.lines[stream].append(line)
                    self.changed.notify_all()
                if self.on_line is not None:
                    self.on_line(stream, line)
        with self.changed:
            self.changed.notify_all()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_for(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        """Wait until ``predicate()`` holds; DemoError on timeout or when the process ended first."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while not predicate():
                if not self.running and not any(r.is_alive() for r in self._readers):
                    raise DemoError(
                        f"{self.title} exited (status {self.returncode()}) before {what}: {self.last_error()}"
                    )
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DemoError(
                        f"timed out after {timeout:.0f} s waiting for {what} "
                        f"(see {self.logs / self.name}.err)"
                    )
                self.changed.wait(min(left, 0.2))

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself (its output read to the end); DemoError on timeout."""
        assert self.process is not None
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(grace=5)
            raise DemoError(f"{self.name} did not finish within {timeout:.0f} s; stopped it") from None
        self._join_readers()
        return self.process.returncode

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def last_error(self) -> str:
        """The last meaningful line the process wrote to stderr (the one-line reason of a failed CLI)."""
        with self.changed:
            err = [line for line in self.lines["err"] if line.strip() and not line.startswith("INFO:")]
        return err[-1].strip() if err else f"no error output (see {self.logs / self.name}.err)"

    def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM (the commands flush and exit), SIGKILL to the whole group after ``grace`` seconds."""
        proc = self.process
        if proc is None:
            return None
        if proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                proc.wait(10)
        self._join_readers()
        return proc.returncode

    def _signal(self, sig: signal.Signals) -> None:
        """Signal the command's process group; only while its leader is not reaped (its id is still ours)."""
        proc = self.process
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)


def run_command(
    name: str,
    argv: Sequence[str],
    logs: Path,
    timeout: float,
    on_line: Callable[[str, str], None] | None = None,
) -> Service:
    """Run a command to its end; DemoError with its own one-line error when it fails."""
    service = Service(name, argv, logs, on_line=on_line).start()
    try:
        code = service.wait_exit(timeout)
    finally:
        service.stop(grace=5)
    if code != 0:
        raise DemoError(f"{' '.join(display(argv))} failed (exit {code}): {service.last_error()}")
    return service


def display(argv: Sequence[str]) -> list[str]:
    """The command as a user types it: ``edge ...`` instead of ``python -m edge ...``."""
    argv = list(argv)
    return ["edge", *argv[len(EDGE) :]] if argv[: len(EDGE)] == list(EDGE) else argv
