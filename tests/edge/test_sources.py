"""Input sources: files and folders, a snapshot URL served by a real local HTTP server.

The watched folder has its own tests: test_watch.py.
"""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.sources import expand_paths, poll_url


@pytest.fixture
def camera(assets):
    """A local HTTP 'camera': /snapshot.jpg serves astronaut.jpg, anything else is 404."""
    body = assets.images["astronaut.jpg"].read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path == "/snapshot.jpg":
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self.send_error(404, "no such camera")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_expand_paths_walks_folders_sorted_and_keeps_missing_paths(tmp_path):
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / ".hidden.jpg").write_bytes(b"x")
    (tmp_path / "upload.jpg.part").write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "d.jpg").write_bytes(b"x")
    items = list(expand_paths([tmp_path, tmp_path / "nope.jpg"]))
    names = [Path(i.name).relative_to(tmp_path).as_posix() for i in items]
    assert names == ["a.png", "b.jpg", "sub/c.jpg", "nope.jpg"]


def test_poll_url_fetches_snapshots(camera, assets):
    stop = threading.Event()
    items = []
    for item in poll_url(f"{camera}/snapshot.jpg", 0.05, stop):
        items.append(item)
        if len(items) == 3:
            stop.set()
    assert [i.name for i in items] == [f"{camera}/snapshot.jpg#{n}" for n in (1, 2, 3)]
    assert all(i.payload == assets.images["astronaut.jpg"].read_bytes() for i in items)


def test_poll_url_errors_are_inputs_not_crashes(camera):
    stop = threading.Event()
    missing = next(poll_url(f"{camera}/gone.jpg", 1, stop))
    assert missing.payload is None and "HTTP 404" in missing.error
    unreachable = next(poll_url("http://127.0.0.1:9/snap.jpg", 1, stop, timeout=2))
    assert "cannot fetch http://127.0.0.1:9/snap.jpg" in unreachable.error


def test_poll_url_option_checks():
    with pytest.raises(ConfigError, match="must start with http"):
        next(poll_url("ftp://cam/snap.jpg", 1, threading.Event()))
    with pytest.raises(ConfigError, match="--interval"):
        next(poll_url("http://cam/snap.jpg", 0, threading.Event()))
