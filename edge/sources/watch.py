"""A watched folder: each file a camera drops into it, once, as soon as it is complete.

Two ways to see files arrive, chosen when the watch starts (``method``) and logged once:

- ``inotify`` (Linux, through ``inotify_simple``): the kernel tells us when a file in the folder is closed
  after writing (``IN_CLOSE_WRITE``) or renamed into it (``IN_MOVED_TO``), and the file is yielded at once:
  about a millisecond after the writer closed it, instead of a few hundred with polling. A file still open
  for writing is never yielded. A symlink or a hard link made in the folder (``IN_CREATE``; ``link()`` is
  how maildir-style writers publish) counts too, since it appears complete. Deletions and renames away
  (``IN_DELETE``, ``IN_MOVED_FROM``) forget the name. When the kernel's queue overflowed
  (``IN_Q_OVERFLOW``) the folder is listed once and what changed is taken with the polling rule below.
  When the folder itself vanishes (deleted, renamed away, unmounted, or a different folder now sits at
  the path: checked every ``TICK``) a warning is logged, its names are forgotten and the path is checked
  every ``TICK`` until a folder is back there; then inotify is armed on it again and the files found in
  it count as new (taken with the polling rule, or at their close-write). Should inotify then fail (no
  watch left), the folder is polled from then on.
- ``poll``, the fallback where inotify is unavailable (not Linux, ``inotify_simple`` missing, no inotify
  instance or watch left: ``fs.inotify.max_user_instances`` / ``max_user_watches``) or cannot be trusted (a
  network or VM-shared filesystem, where files written by another host raise no event here): the folder is
  listed every ``poll`` seconds and a file is yielded once its (size, mtime) held for one poll.

Both yield each new file once, skip hidden and partial files (``edge.sources.files.skipped``) and take a
name again when its file is rewritten in place (another close-write; for polling, another size or mtime)
or removed and created again. Files already complete when the watch starts are not yielded; one still
being written then is yielded when it completes. A temporary file renamed into place is yielded once,
under its final name, provided its temporary name is a skipped one (hidden or a partial suffix).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import stat
import sys
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

from edge.errors import ConfigError
from edge.sources.base import InputItem
from edge.sources.files import skipped

log = logging.getLogger(__name__)

METHODS = ("auto", "inotify", "poll")
# The longest inotify read (or ``poll``, when shorter): how soon ``stop`` is noticed, the folder's identity
# re-checked and a file found by a listing (after an overflow, or once a vanished folder is back) confirmed.
TICK = 0.2
# Filesystems where changes made by another host (the NFS server, the VM host...) raise no inotify event.
NO_EVENT_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "virtiofs",
        "vboxsf",
        "vmhgfs",
        "fuse.vmhgfs-fuse",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.glusterfs",
        "glusterfs",
        "ceph",
        "fuse.ceph",
        "afs",
        "lustre",
        "gpfs",
        "davfs",
    }
)

# <sys/inotify.h>
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
WATCH_MASK = (
    IN_CLOSE_WRITE
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_MOVED_FROM
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
    | IN_EXCL_UNLINK
)
_GONE = IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT

Signature = tuple[int, int, int]  # (inode, size, mtime_ns): a change means the file was written again


def watch_folder(
    folder: str | Path, stop: threading.Event, poll: float = 0.2, *, method: str = "auto"
) -> FolderWatch:
    """Files created (or rewritten) in ``folder`` from this call on, once each, when complete.

    ``method`` is ``"auto"`` (inotify where it works, else polling), ``"inotify"`` (raises ``ConfigError``
    when it cannot be used) or ``"poll"``; ``poll`` is the polling interval in seconds. The watch starts
    here, not at the first ``next()``. The iterator ends soon (within ``TICK``) after ``stop`` is set;
    setting ``stop`` or closing it releases the inotify descriptor. Items carry the time the file was seen
    complete (``captured_at``, ``captured_mono``).
    """
    folder = Path(folder)
    if method not in METHODS:
        raise ConfigError(f"watch method {method!r}: use one of {', '.join(METHODS)}")
    if not poll > 0:
        raise ConfigError(f"watch poll interval must be more than 0 s, got {poll}")
    if not folder.is_dir():
        raise ConfigError(f"--watch {folder}: not a folder; create it or check the path")
    return FolderWatch(folder, stop, poll, method)


class FolderWatch(Iterator[InputItem]):
    """The iterator ``watch_folder`` returns; ``method`` says how files are seen now: "inotify" or "poll".

    Consume and close it from one thread; from another thread, set ``stop`` instead. Dropping it releases
    the inotify descriptor at once too (the loop does not refer back to it, so no garbage cycle holds it).
    """

    def __init__(self, folder: Path, stop: threading.Event, poll: float, method: str) -> None:
        self._watcher = _Watcher(folder, stop, poll, method)
        self._items = self._watcher.run()

    @property
    def folder(self) -> Path:
        return self._watcher.folder

    @property
    def method(self) -> str:
        return self._watcher.method

    def __iter__(self) -> FolderWatch:
        return self

    def __next__(self) -> InputItem:
        return next(self._items)

    def close(self) -> None:
        """End the watch and release the inotify descriptor (also when it was never started)."""
        self._items.close()
        self._watcher.release()

    def __enter__(self) -> FolderWatch:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if hasattr(self, "_items"):  # not when _Watcher raised
            with contextlib.suppress(Exception):  # at interpreter exit, say
                self.close()


class _Watcher:
    """The state and the loop of one watch."""

    def __init__(self, folder: Path, stop: threading.Event, poll: float, method: str) -> None:
        self.folder = folder
        self.method = "poll"
        self._stop = stop
        self._poll = poll
        self._tick = min(TICK, poll)
        self._notify: Any = None  # the inotify_simple.INotify, open while inotify may be used
        self._wd = -1  # the folder's watch descriptor, -1 while it is polled
        self._identity: tuple[int, int] | None = None
        self._known: dict[str, Signature] = {}  # files taken (or already there), as last seen
        self._pending: dict[str, Signature] = {}  # files seen changed by a listing, to confirm
        self._missing = False
        self._next_tick = 0.0
        reason = "asked for" if method == "poll" else self._arm(check_filesystem=method == "auto")
        if reason is not None and method == "inotify":
            raise ConfigError(f"--watch {folder}: cannot use inotify: {reason}")
        try:
            self._known = self._list()  # after arming: a file closed in between is yielded, not lost
        except OSError as exc:
            self.release()
            raise ConfigError(f"--watch {folder}: cannot list it: {exc}") from exc
        if reason is None:
            log.info("watching %s with inotify", folder)
        else:
            log.info("watching %s by polling every %g s (%s)", folder, poll, reason)

    # -- the loop ----------------------------------------------------------------------------------------

    def run(self) -> Generator[InputItem, None, None]:
        try:
            while not self._stop.is_set():
                if self._wd >= 0:
                    yield from self._inotify_round()
                else:
                    yield from self._poll_round()
        finally:
            self.release()

    def _inotify_round(self) -> Iterator[InputItem]:
        wait = max(0.0, min(self._tick, self._next_tick - time.monotonic()))
        events = self._notify.read(timeout=math.ceil(wait * 1000))
        seen_at, seen_mono = time.time(), time.perf_counter()
        overflow = gone = False
        for event in events:
            if event.mask & IN_Q_OVERFLOW:
                overflow = True
            elif event.wd != self._wd:
                continue  # a watch already given up (the IN_IGNORED of one we removed)
            elif event.mask & _GONE:
                gone = True
            elif event.name and not event.mask & IN_ISDIR and not skipped(self.folder / event.name):
                if event.mask & (IN_DELETE | IN_MOVED_FROM):
                    self._forget(event.name)
                elif self._complete(event.name, event.mask):
                    if self._stop.is_set():
                        return
                    yield self._item(event.name, seen_at, seen_mono)
        if gone:
            self._vanished("is gone")
            return
        if overflow:
            log.warning("watch folder %s: inotify queue overflowed; listing it again", self.folder)
            yield from self._settle()
        if time.monotonic() >= self._next_tick:
            self._next_tick = time.monotonic() + self._tick
            if _identity(self.folder) != self._identity:
                self._vanished("is gone or was replaced")
            elif self._pending:
                yield from self._settle()

    def _poll_round(self) -> Iterator[InputItem]:
        if self._notify is not None:  # inotify, once the vanished folder is back
            if not self._rearm():
                self._stop.wait(self._tick)
            return
        yield from self._settle()
        self._stop.wait(self._poll)

    # -- inotify -----------------------------------------------------------------------------------------

    def _arm(self, check_filesystem: bool) -> str | None:
        """Watch the folder with inotify; None when done, else why not."""
        if not sys.platform.startswith("linux"):
            return f"no inotify on {sys.platform}"
        if check_filesystem:
            kind = _filesystem(self.folder)
            if kind in NO_EVENT_FILESYSTEMS:
                return f"{kind} raises no inotify event for files written by another host"
        try:
            from inotify_simple import INotify
        except ImportError:
            return "inotify_simple is not installed"
        try:
            notify = INotify()
        except OSError as exc:
            return _why(exc)
        try:
            self._wd = notify.add_watch(self.folder, WATCH_MASK)
        except OSError as exc:
            notify.close()
            return _why(exc)
        self._notify = notify
        self._identity = _identity(self.folder)
        self.method = "inotify"
        return None

    def _rearm(self) -> bool:
        """Watch the folder again once it is back (its files count as new); True when inotify is on."""
        if not self.folder.is_dir():
            return False
        try:
            self._wd = self._notify.add_watch(self.folder, WATCH_MASK)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
                log.warning("watch folder %s: cannot watch it again (%s); polling it", self.folder, _why(exc))
                self.release()
            return False
        self._identity = _identity(self.folder)
        self.method = "inotify"
        self._missing = False
        log.info("watch folder %s is back; watching it with inotify", self.folder)
        try:  # the files already there count as new, once they held for one tick
            self._pending = {name: sig for name, sig in self._list().items() if sig[1] > 0}
        except OSError:
            self._pending = {}
        self._known = {}
        self._next_tick = time.monotonic() + self._tick
        return True

    def _vanished(self, how: str) -> None:
        if self._wd >= 0:
            with contextlib.suppress(OSError):  # the kernel may have dropped it already (IN_IGNORED)
                self._notify.rm_watch(self._wd)
        self._wd = -1
        self._identity = None
        self.method = "poll"
        self._missing = True
        self._known.clear()
        self._pending.clear()
        log.warning("watch folder %s %s; waiting for it to be back", self.folder, how)
        self._rearm()  # at once when another folder already stands at the path

    def _complete(self, name: str, mask: int) -> bool:
        """Whether the event on ``name`` means a file is there, complete; if so, remember it."""
        path = self.folder / name
        try:
            if mask & (IN_CLOSE_WRITE | IN_MOVED_TO):
                info = path.stat()
            else:  # IN_CREATE: complete only as a symlink or a hard link, else its close-write will come
                link = path.lstat()
                if not (stat.S_ISLNK(link.st_mode) or link.st_nlink > 1):
                    return False
                info = path.stat()
        except OSError:
            return False  # gone again (or a dangling link); its removal is the next event
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            return False  # an empty file counts once something is written to it
        self._known[name] = _signature(info)
        self._pending.pop(name, None)
        return True

    def _forget(self, name: str) -> None:
        self._known.pop(name, None)
        self._pending.pop(name, None)

    def release(self) -> None:
        notify, self._notify = self._notify, None
        self._wd = -1
        if notify is not None:
            notify.close()

    # -- listing -----------------------------------------------------------------------------------------

    def _list(self) -> dict[str, Signature]:
        """The folder's files that may be inputs, by name; OSError when it cannot be listed."""
        found: dict[str, Signature] = {}
        with os.scandir(self.folder) as entries:
            for entry in entries:
                if skipped(Path(entry.name)):
                    continue
                try:
                    info = entry.stat()
                except OSError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found[entry.name] = _signature(info)
        return found

    def _settle(self) -> Iterator[InputItem]:
        """List the folder; yield the files whose signature changed and then held since the last listing."""
        try:
            found = self._list()
        except OSError as exc:
            if not self._missing:
                log.warning("watch folder %s: cannot list it (%s); waiting for it", self.folder, exc)
                self._missing = True
            self._known.clear()  # its files are gone: names that come back count as new
            self._pending.clear()
            return
        if self._missing:
            log.info("watch folder %s is back", self.folder)
            self._missing = False
        seen_at, seen_mono = time.time(), time.perf_counter()
        for name in self._known.keys() - found.keys():
            del self._known[name]
        for name in self._pending.keys() - found.keys():
            del self._pending[name]
        for name in sorted(found):
            signature = found[name]
            if self._known.get(name) == signature:
                self._pending.pop(name, None)
            elif signature[1] > 0 and self._pending.get(name) == signature:
                del self._pending[name]
                self._known[name] = signature
                if self._stop.is_set():
                    return
                yield self._item(name, seen_at, seen_mono)
            elif signature[1] > 0 or self._wd < 0:  # with inotify, an empty file's close-write will come
                self._pending[name] = signature

    def _item(self, name: str, seen_at: float, seen_mono: float) -> InputItem:
        path = self.folder / name
        return InputItem(str(path), path, captured_at=seen_at, captured_mono=seen_mono)


def _signature(info: os.stat_result) -> Signature:
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def _identity(folder: Path) -> tuple[int, int] | None:
    try:
        info = folder.stat()
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISDIR(info.st_mode) else None


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"no inotify watch left; raise fs.inotify.max_user_watches ({exc})"
    if exc.errno == errno.EMFILE:
        return f"no inotify instance left; raise fs.inotify.max_user_instances ({exc})"
    return f"inotify failed: {exc}"


def _filesystem(folder: Path) -> str | None:
    """The type of the filesystem ``folder`` is on (from /proc/self/mountinfo), None when unknown."""
    try:
        real = os.path.realpath(folder)
        table = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return None
    longest, kind = -1, None
    for line in table.splitlines():
        left, dash, right = line.partition(" - ")
        fields = left.split()
        if not dash or len(fields) < 5 or not right:
            continue
        mount = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= longest:  # the last of equal mount points is the one on top
            longest, kind = len(mount), right.split()[0]
    return kind
