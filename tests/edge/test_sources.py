"""Input sources: files and folders, a watched folder, a snapshot URL served by a real local HTTP server."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.sources import InputItem, expand_paths, poll_url, watch_folder


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


def test_watch_folder_yields_new_files_once_when_complete(tmp_path):
    (tmp_path / "old.jpg").write_bytes(b"already here")
    stop = threading.Event()
    got: list[InputItem] = []

    watching = watch_folder(tmp_path, stop, poll=0.05)  # files from now on count as new

    def consume() -> None:
        for item in watching:
            got.append(item)
            if len(got) == 2:
                stop.set()

    thread = threading.Thread(target=consume)
    thread.start()
    (tmp_path / ".incoming.tmp").write_bytes(b"partial")
    (tmp_path / "first.jpg").write_bytes(b"1")
    time.sleep(0.3)
    (tmp_path / "second.jpg").write_bytes(b"2")
    thread.join(timeout=10)
    stop.set()
    assert not thread.is_alive()
    assert [Path(i.name).name for i in got] == ["first.jpg", "second.jpg"]


def test_watch_folder_takes_a_reused_name_again_once_the_old_file_was_removed(tmp_path):
    stop = threading.Event()
    guard = threading.Timer(20, stop.set)  # ends the watch (and fails the test) instead of hanging
    guard.start()
    try:
        watching = watch_folder(tmp_path, stop, poll=0.02)
        (tmp_path / "snapshot.jpg").write_bytes(b"1")
        assert Path(next(watching).name).name == "snapshot.jpg"
        (tmp_path / "snapshot.jpg").unlink()  # processed and removed, as a camera pipeline does
        (tmp_path / "other.jpg").write_bytes(b"2")
        assert Path(next(watching).name).name == "other.jpg"  # the watch has listed the folder since
        (tmp_path / "snapshot.jpg").write_bytes(b"3")
        item = next(watching, None)
        assert item is not None and Path(item.name).name == "snapshot.jpg"
    finally:
        guard.cancel()
        stop.set()


def test_watch_folder_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        watch_folder(tmp_path / "nope", threading.Event())


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
