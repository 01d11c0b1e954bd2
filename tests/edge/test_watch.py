"""The watched folder, with inotify and with polling: real files in tmp_path, real inotify.

Waits are deadlines (a queue read with a timeout), never fixed sleeps: the tests hold on a loaded machine.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.sources import InputItem, watch_folder
from edge.sources import watch as watch_module
from edge.sources.watch import FolderWatch

DEADLINE = 10.0  # seconds any expected item may take on a loaded machine (both methods need far less)
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux only")


class Watch:
    """A watch consumed by a thread into a queue, so the test can write files while it waits."""

    def __init__(self, watching: FolderWatch, stop: threading.Event) -> None:
        self.watching, self.stop = watching, stop
        self.items: queue.Queue[InputItem | None] = queue.Queue()
        self.thread = threading.Thread(target=self._consume, daemon=True)
        self.thread.start()

    def _consume(self) -> None:
        try:
            for item in self.watching:
                self.items.put(item)
        finally:
            self.items.put(None)  # the iterator ended

    def next(self, timeout: float = DEADLINE) -> str:
        """The file name of the next item (fails the test when none comes before the deadline)."""
        try:
            item = self.items.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no item within {timeout} s")
        assert item is not None, "the watch ended"
        return Path(item.name).name

    def end(self) -> None:
        self.stop.set()
        self.thread.join(DEADLINE)
        assert not self.thread.is_alive(), "the watch did not end once stop was set"


Start = Callable[..., Watch]


@pytest.fixture(params=["inotify", "poll"])
def method(request: pytest.FixtureRequest) -> str:
    if request.param == "inotify" and not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux only")
    return str(request.param)


@pytest.fixture
def start(method: str) -> Iterator[Start]:
    """``start(folder, poll=...)``: a consumed watch with this test's method; inotify never needs the poll."""
    watches: list[Watch] = []

    def begin(folder: Path, poll: float | None = None) -> Watch:
        poll = poll if poll is not None else (30.0 if method == "inotify" else 0.02)
        stop = threading.Event()
        watching = watch_folder(folder, stop, poll=poll, method=method)
        assert watching.method == method
        watches.append(Watch(watching, stop))
        return watches[-1]

    yield begin
    for watch in watches:
        watch.end()


def inotify_fds() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd listdir itself used is gone
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:inotify"
    return count


def test_new_files_come_once_each_and_files_already_there_do_not(start, tmp_path):
    (tmp_path / "a-old.jpg").write_bytes(b"already here")  # sorts first: a poller taking it would show it
    watch = start(tmp_path)
    (tmp_path / "first.jpg").write_bytes(b"1")  # before the consumer's first listing: the watch began above
    assert watch.next() == "first.jpg"
    (tmp_path / "second.jpg").write_bytes(b"2")
    assert watch.next() == "second.jpg"
    (tmp_path / "third.jpg").write_bytes(b"3")
    assert watch.next() == "third.jpg"  # neither a-old.jpg nor a repeat came in between


def test_hidden_partial_empty_files_and_folders_are_skipped(start, tmp_path):
    watch = start(tmp_path)
    for name in (".hidden.jpg", "upload.jpg.part", "a.jpg.tmp", "b.crdownload", "c.partial", ".d.swp"):
        (tmp_path / name).write_bytes(b"partial")
    (tmp_path / "a-sub").mkdir()
    (tmp_path / "a-empty.jpg").write_bytes(b"")
    (tmp_path / "z-sentinel.jpg").write_bytes(b"done")
    assert watch.next() == "z-sentinel.jpg"
    (tmp_path / "a-empty.jpg").write_bytes(b"now with content")  # an empty file counts once written to
    assert watch.next() == "a-empty.jpg"


def test_a_temporary_file_renamed_into_place_comes_once_under_its_final_name(start, tmp_path):
    inbox, staging = tmp_path / "inbox", tmp_path / "staging"
    inbox.mkdir()
    staging.mkdir()
    watch = start(inbox)
    (inbox / ".photo.jpg.tmp").write_bytes(b"jpeg bytes")
    os.rename(inbox / ".photo.jpg.tmp", inbox / "photo.jpg")
    assert watch.next() == "photo.jpg"
    (staging / "moved.jpg").write_bytes(b"written elsewhere")  # written outside, moved in
    os.rename(staging / "moved.jpg", inbox / "moved.jpg")
    assert watch.next() == "moved.jpg"
    (inbox / "sentinel.jpg").write_bytes(b"x")
    assert watch.next() == "sentinel.jpg"  # no second photo.jpg or moved.jpg


def test_links_made_in_the_folder_count(start, tmp_path):
    inbox, elsewhere = tmp_path / "inbox", tmp_path / "elsewhere"
    inbox.mkdir()
    elsewhere.mkdir()
    (elsewhere / "a.jpg").write_bytes(b"a")
    (elsewhere / "b.jpg").write_bytes(b"b")
    watch = start(inbox)
    os.symlink(elsewhere / "a.jpg", inbox / "symlink.jpg")
    assert watch.next() == "symlink.jpg"
    os.link(elsewhere / "b.jpg", inbox / "hardlink.jpg")  # how maildir-style writers publish a file
    assert watch.next() == "hardlink.jpg"


def test_a_file_rewritten_in_place_counts_again(start, tmp_path):
    watch = start(tmp_path)
    target = tmp_path / "snapshot.jpg"
    target.write_bytes(b"frame 1")
    assert watch.next() == "snapshot.jpg"
    inode = target.stat().st_ino
    target.write_bytes(b"frame 2")  # same name, same size, same inode: a new close-write, a new mtime
    assert target.stat().st_ino == inode
    assert watch.next() == "snapshot.jpg"


def test_a_removed_name_that_comes_back_counts_again(start, tmp_path):
    watch = start(tmp_path)
    (tmp_path / "snapshot.jpg").write_bytes(b"1")
    assert watch.next() == "snapshot.jpg"
    (tmp_path / "snapshot.jpg").unlink()  # processed and removed, as a camera pipeline does
    (tmp_path / "other.jpg").write_bytes(b"2")
    assert watch.next() == "other.jpg"  # the watch has seen the removal since
    (tmp_path / "snapshot.jpg").write_bytes(b"3")
    assert watch.next() == "snapshot.jpg"


@linux_only
def test_with_inotify_a_file_still_open_for_writing_waits_for_its_close(tmp_path):
    stop = threading.Event()
    watch = Watch(watch_folder(tmp_path, stop, poll=30, method="inotify"), stop)
    try:
        with (tmp_path / "a-upload.jpg").open("wb") as upload:
            upload.write(b"first half")
            upload.flush()
            (tmp_path / "z-other.jpg").write_bytes(b"x")
            assert watch.next() == "z-other.jpg"  # the open file, written before, did not come first
            upload.write(b" second half")
        assert watch.next() == "a-upload.jpg"  # on its close
    finally:
        watch.end()


def test_the_poller_takes_a_file_only_once_its_size_and_mtime_held_for_one_poll(tmp_path):
    watching = watch_folder(tmp_path, threading.Event(), poll=30, method="poll")
    with watching:
        # one listing per call of the poller's step: no timing involved
        with (tmp_path / "growing.jpg").open("wb") as upload:
            upload.write(b"part 1")
            upload.flush()
            assert list(watching._watcher._settle()) == []  # first seen
            upload.write(b" part 2")
            upload.flush()
            assert list(watching._watcher._settle()) == []  # it changed since
        assert [Path(i.name).name for i in watching._watcher._settle()] == ["growing.jpg"]  # it held
        assert list(watching._watcher._settle()) == []  # once


def test_items_carry_the_path_and_the_moment_the_file_was_seen(start, tmp_path):
    watch = start(tmp_path)
    before, before_mono = time.time(), time.perf_counter()
    (tmp_path / "a.jpg").write_bytes(b"1")
    item = watch.items.get(timeout=DEADLINE)
    after, after_mono = time.time(), time.perf_counter()
    assert item is not None
    assert item.name == str(tmp_path / "a.jpg") and item.payload == tmp_path / "a.jpg"
    assert item.captured_at is not None and before <= item.captured_at <= after
    assert item.captured_mono is not None and before_mono <= item.captured_mono <= after_mono
    assert item.source is None and item.frame is None and item.error is None  # the caller stamps those


def waiting(thread: threading.Thread) -> bool:
    """Whether ``thread`` is blocked in the watch's wait: a poll's ``Event.wait`` or an inotify read."""
    frame = sys._current_frames().get(thread.ident or -1)
    return frame is not None and frame.f_code.co_name in ("wait", "read")


def test_stop_ends_the_watch_promptly_while_no_file_comes(start, tmp_path):
    watch = start(tmp_path, poll=30)  # a poll would take 30 s
    deadline = time.monotonic() + DEADLINE
    while not waiting(watch.thread):  # the consumer is blocked, waiting for a file
        assert time.monotonic() < deadline
        time.sleep(0.005)
    begun = time.monotonic()
    watch.stop.set()
    watch.thread.join(DEADLINE)
    assert not watch.thread.is_alive()
    assert time.monotonic() - begun < 5  # far from the 30 s poll: stop is checked while waiting
    assert watch.items.get(timeout=1) is None


@linux_only
def test_the_inotify_descriptor_is_released_on_close_and_on_stop(tmp_path):
    base = inotify_fds()
    unstarted = watch_folder(tmp_path, threading.Event(), method="inotify")
    assert inotify_fds() == base + 1
    unstarted.close()  # closed before any next()
    assert inotify_fds() == base

    with watch_folder(tmp_path, threading.Event(), method="inotify") as watching:
        (tmp_path / "a.jpg").write_bytes(b"1")
        assert Path(next(watching).name).name == "a.jpg"
        assert inotify_fds() == base + 1
    assert inotify_fds() == base

    stop = threading.Event()
    watch = Watch(watch_folder(tmp_path, stop, method="inotify"), stop)
    watch.end()  # stop set while it waits: the iterator ends and lets go of the descriptor
    assert inotify_fds() == base

    def first_of(items: Iterator[InputItem]) -> InputItem:
        for item in items:
            return item  # abandoned without close(), as a consumer that stops early does
        raise AssertionError("the watch ended")

    dropped = watch_folder(tmp_path, threading.Event(), method="inotify")
    (tmp_path / "b.jpg").write_bytes(b"2")
    assert Path(first_of(dropped).name).name == "b.jpg"
    del dropped
    assert inotify_fds() == base  # released as the iterator was dropped, not at some later collection


@linux_only
def test_inotify_yields_without_waiting_for_a_poll(tmp_path):
    stop = threading.Event()
    watch = Watch(watch_folder(tmp_path, stop, poll=30), stop)  # auto: inotify here
    try:
        assert watch.watching.method == "inotify"
        dropped = time.perf_counter()
        (tmp_path / "a.jpg").write_bytes(b"1")
        item = watch.items.get(timeout=DEADLINE)  # a poller would need 30 s and more
        assert item is not None and Path(item.name).name == "a.jpg"
        assert item.captured_mono is not None and item.captured_mono - dropped < 30
    finally:
        watch.end()


def test_a_folder_that_vanishes_is_waited_for_and_its_new_files_count(start, method, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge.sources.watch")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    watch = start(inbox, poll=0.05)
    (inbox / "a.jpg").write_bytes(b"1")
    assert watch.next() == "a.jpg"
    os.rename(inbox, tmp_path / "inbox-old")  # it goes, with a.jpg
    deadline = time.monotonic() + DEADLINE
    while not [r for r in caplog.records if r.levelno == logging.WARNING]:  # "gone" or "cannot list it"
        assert time.monotonic() < deadline, "the vanished folder was not noticed"
        time.sleep(0.01)
    assert watch.watching.method == "poll"
    inbox.mkdir()
    (inbox / "b.jpg").write_bytes(b"2")
    assert watch.next() == "b.jpg"  # found by a listing, or by inotify armed again in time
    assert watch.watching.method == method  # inotify again once the folder is back
    (inbox / "c.jpg").write_bytes(b"3")
    assert watch.next() == "c.jpg"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # one warning for the outage, not one per poll


@linux_only
def test_a_folder_replaced_under_the_watch_is_watched_again(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stop = threading.Event()
    watch = Watch(watch_folder(inbox, stop, poll=30, method="inotify"), stop)
    try:
        os.rename(inbox, tmp_path / "inbox-old")
        inbox.mkdir()  # at once: the watch may see only the new folder, by its identity
        (inbox / "new.jpg").write_bytes(b"1")
        assert watch.next() == "new.jpg"
        (tmp_path / "inbox-old" / "stale.jpg").write_bytes(b"old folder")  # no longer watched
        (inbox / "next.jpg").write_bytes(b"2")
        assert watch.next() == "next.jpg"
        assert watch.watching.method == "inotify"
    finally:
        watch.end()


@linux_only
def test_after_an_inotify_queue_overflow_every_file_comes_exactly_once(tmp_path, caplog):
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 1_000_000:
        pytest.skip(f"max_queued_events is {limit}: too many events to overflow it")
    caplog.set_level(logging.WARNING, logger="edge.sources.watch")

    def write(name: str, data: bytes = b"x") -> None:
        fd = os.open(tmp_path / name, os.O_WRONLY | os.O_CREAT)  # os-level: the test makes many events
        os.write(fd, data)
        os.close(fd)

    stop = threading.Event()
    guard = threading.Timer(60, stop.set)  # ends the watch (and fails the test) instead of hanging
    guard.start()
    try:
        watching = watch_folder(tmp_path, stop, poll=30, method="inotify")
        before = [f"a-{i:03}.jpg" for i in range(50)]  # their events are queued
        after = [f"b-{i:03}.jpg" for i in range(50)]  # their events are lost: only a listing finds them
        for name in before:
            write(name)
        for i in range(limit):  # nobody reads meanwhile: close-writes of a skipped file fill the queue
            write(f".pad{i % 2}")  # alternating, so the kernel cannot merge them
        for name in after:
            write(name)
        got = [Path(next(watching).name).name for _ in before + after]
        assert sorted(got) == before + after  # each exactly once
        assert any("overflowed" in r.getMessage() for r in caplog.records)
        write("sentinel.jpg")
        assert Path(next(watching).name).name == "sentinel.jpg"  # nothing came twice
        watching.close()
    finally:
        guard.cancel()


def test_the_method_in_use_is_logged_once(start, method, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="edge.sources.watch")
    watch = start(tmp_path)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (tmp_path / name).write_bytes(b"x")
        assert watch.next() == name
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and ("with inotify" if method == "inotify" else "by polling") in logged[0]


# -- falling back to polling where inotify is unavailable -------------------------------------------------


def _falls_back(tmp_path: Path, caplog: pytest.LogCaptureFixture, why: str) -> None:
    """``auto`` polls, says why once, still delivers files and holds no inotify descriptor."""
    stop = threading.Event()
    base = inotify_fds() if sys.platform.startswith("linux") else 0
    with caplog.at_level(logging.INFO, logger="edge.sources.watch"):
        watch = Watch(watch_folder(tmp_path, stop, poll=0.02), stop)
    try:
        assert watch.watching.method == "poll"
        assert [r.getMessage() for r in caplog.records if why in r.getMessage()], caplog.text
        if sys.platform.startswith("linux"):
            assert inotify_fds() == base
        (tmp_path / "a.jpg").write_bytes(b"1")
        assert watch.next() == "a.jpg"
    finally:
        watch.end()


def test_without_inotify_simple_the_watch_polls(tmp_path, caplog, monkeypatch):
    monkeypatch.setitem(sys.modules, "inotify_simple", None)  # import fails
    _falls_back(tmp_path, caplog, "inotify_simple is not installed")
    with pytest.raises(ConfigError, match="cannot use inotify"):
        watch_folder(tmp_path, threading.Event(), method="inotify")


@linux_only
def test_out_of_inotify_watches_the_watch_polls(tmp_path, caplog, monkeypatch):
    import inotify_simple

    def no_watch_left(self: object, path: object, mask: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(inotify_simple.INotify, "add_watch", no_watch_left)
    _falls_back(tmp_path, caplog, "max_user_watches")  # and the INotify it opened was closed


@linux_only
def test_out_of_inotify_instances_the_watch_polls(tmp_path, caplog, monkeypatch):
    import inotify_simple

    class NoInstanceLeft:
        def __init__(self) -> None:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(inotify_simple, "INotify", NoInstanceLeft)
    _falls_back(tmp_path, caplog, "max_user_instances")


def test_off_linux_the_watch_polls(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    _falls_back(tmp_path, caplog, "no inotify on darwin")


@linux_only
def test_on_a_network_filesystem_auto_polls_and_inotify_can_be_forced(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(watch_module, "_filesystem", lambda folder: "nfs4")
    _falls_back(tmp_path, caplog, "nfs4 raises no inotify event")
    with watch_folder(tmp_path, threading.Event(), method="inotify") as forced:
        assert forced.method == "inotify"


@linux_only
def test_the_filesystem_of_a_folder_is_read_from_the_mount_table():
    assert watch_module._filesystem(Path("/proc/self")) == "proc"
    assert watch_module._filesystem(Path("/")) is not None


def test_bad_arguments(tmp_path):
    with pytest.raises(ConfigError, match="not a folder"):
        watch_folder(tmp_path / "nope", threading.Event())
    (tmp_path / "file.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not a folder"):
        watch_folder(tmp_path / "file.jpg", threading.Event())
    with pytest.raises(ConfigError, match="watch method"):
        watch_folder(tmp_path, threading.Event(), method="fanotify")
    with pytest.raises(ConfigError, match="more than 0"):
        watch_folder(tmp_path, threading.Event(), poll=0)
