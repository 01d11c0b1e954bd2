"""Commands on ``<prefix>/<id>/cmd/<name>``, each answered on ``.../cmd/<name>/reply``.

``ping``, ``reload``, ``set`` (``top_k``, ``threshold``), ``snapshot`` (with live sources: the latest frame of
``source`` or of each, as a retained JPEG on ``<source>/snapshot``; else one inference now, on the last input
seen, else the newest file of the watch folder; a given ``input`` must lie inside the watch folder or the
inputs the device was started with, so a publisher cannot make the device read any file) and ``replay``
(re-publish stored results ``from``..``to`` for a collector that found a gap).
Commands run one at a time on a worker thread, never on the network thread. A payload that is not JSON,
is oversized or has wrong fields is counted in ``bad_payloads``, logged with its topic, answered with
``ok: false`` and otherwise ignored.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from cloud_sync.connection import Message, MqttConnection
from cloud_sync.errors import PayloadError
from cloud_sync.messages import decode_json, reply
from cloud_sync.outbox import Outbox
from cloud_sync.topics import DeviceTopics

log = logging.getLogger(__name__)
MAX_REPLAY = 10_000
COMMANDS = ("ping", "reload", "set", "snapshot", "replay")


def ranges(numbers: list[int]) -> list[list[int]]:
    """``[1, 2, 3, 7]`` -> ``[[1, 3], [7, 7]]``."""
    out: list[list[int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return out


def _int(body: dict[str, Any], key: str, topic: str, minimum: int) -> int:
    value = body.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PayloadError(f"command on {topic}: {key!r} is {value!r}, expected an integer >= {minimum}")
    return value


class Commands:
    """Receives commands, runs them on a worker thread, publishes replies."""

    def __init__(
        self,
        connection: MqttConnection,
        topics: DeviceTopics,
        pipeline: Any,
        outbox: Outbox,
        emit: Callable[[dict[str, Any]], None],
        last_input: Callable[[], Any],
        reload: Callable[[], None] | None = None,
        inputs: Sequence[Path] = (),
        watch: Path | None = None,
        frames: Any = None,
        publish_frame: Callable[[str, bytes], str] | None = None,
    ) -> None:
        self.reload = reload
        self.frames = frames  # edge.events.FrameKeeper: the latest frame of each live source
        self.publish_frame = publish_frame
        self.watch = watch
        # What ``snapshot`` may read: the watch folder and the files and folders given as inputs.
        self.snapshot_roots = tuple(Path(p).resolve() for p in ([watch] if watch else []) + list(inputs))
        self.connection = connection
        self.topics = topics
        self.pipeline = pipeline
        self.outbox = outbox
        self.emit = emit
        self.last_input = last_input
        self.bad_payloads = 0
        self.handled = 0
        self._queue: queue.Queue[tuple[str, bytes] | None] = queue.Queue(maxsize=100)
        self._thread = threading.Thread(target=self._work, name="mqtt-commands", daemon=True)
        self._thread.start()
        connection.subscribe(topics.cmd_filter, self.receive)

    def receive(self, message: Message) -> None:
        """Network thread: route to the worker (replies and unknown depth are ignored)."""
        name = message.topic.rsplit("/", 1)[-1]
        try:
            self._queue.put_nowait((name, message.payload))
        except queue.Full:
            self.bad_payloads += 1
            log.warning("command queue full; dropped a command on %s", message.topic)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=10)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            name, payload = item
            topic = self.topics.cmd(name)
            body: dict[str, Any] | None = None
            try:
                body = decode_json(payload, topic) if payload.strip() else {}
                if name not in COMMANDS:
                    raise PayloadError(f"unknown command {name!r} on {topic}; known: {', '.join(COMMANDS)}")
                fields = getattr(self, f"_cmd_{name}")(body, topic)
                answer = reply(body, True, **fields)
                self.handled += 1
            except PayloadError as exc:
                self.bad_payloads += 1
                log.warning("bad command payload: %s", exc)
                answer = reply(body, False, error=str(exc))
            except Exception as exc:
                log.exception("command %s failed", name)
                answer = reply(body, False, error=f"{type(exc).__name__}: {exc}")
            self.connection.publish(self.topics.reply(name), answer, qos=1)

    # ----------------------------------------------------------------- commands

    def _cmd_ping(self, body: dict[str, Any], topic: str) -> dict[str, Any]:
        return {"pong": True, "device": self.topics.device_id, "seq": self.outbox.last_seq}

    def _cmd_reload(self, body: dict[str, Any], topic: str) -> dict[str, Any]:
        reload = self.reload or getattr(self.pipeline, "reload", None)
        if reload is None:
            raise PayloadError(f"command on {topic}: this pipeline cannot reload its model")
        reload()
        model = getattr(self.pipeline, "model", None)
        return {"model": {"name": getattr(model, "name", None), "version": getattr(model, "version", None)}}

    def _cmd_set(self, body: dict[str, Any], topic: str) -> dict[str, Any]:
        unknown = sorted(set(body) - {"top_k", "threshold", "request_id"})
        if unknown:
            raise PayloadError(
                f"command on {topic}: unknown field(s) {unknown}; 'set' takes top_k and threshold"
            )
        options: dict[str, Any] = {}
        if "top_k" in body:
            options["top_k"] = _int(body, "top_k", topic, 1)
        if "threshold" in body:
            value = body["threshold"]
            if not isinstance(value, int | float) or isinstance(value, bool) or not 0.0 <= value <= 1.0:
                raise PayloadError(f"command on {topic}: 'threshold' is {value!r}, expected a number 0..1")
            options["threshold"] = float(value)
        if not options:
            raise PayloadError(f"command on {topic}: nothing to set; pass top_k and/or threshold")
        self.pipeline.set_options(**options)
        return {"applied": options}

    def _cmd_snapshot(self, body: dict[str, Any], topic: str) -> dict[str, Any]:
        item: Any
        live = self.frames.sources() if self.frames is not None and self.publish_frame is not None else []
        if "source" in body or ("input" not in body and live):
            if not live:
                raise PayloadError(f"command on {topic}: 'source' given, but no live source has given a "
                                   'frame (streams, cameras, video files); pass {"input": "IMAGE_PATH"}')
            return self._frame_snapshots(body, topic, live)
        if "input" in body:
            item = self._allowed_input(body["input"], topic)
        else:
            item = self.last_input() or self._newest_watched()
            if not isinstance(item, str) or not item:
                raise PayloadError(
                    f"command on {topic}: no input seen yet and no file in the watch folder; "
                    'pass {"input": "IMAGE_PATH"} inside the watch folder or the inputs'
                )
        result = self.pipeline.infer(item)
        record = result.to_json() if hasattr(result, "to_json") else dict(result)
        self.emit(record)
        return {"result": record}

    def _frame_snapshots(self, body: dict[str, Any], topic: str, live: list[str]) -> dict[str, Any]:
        """The latest frame of one source (``{"source": NAME}``) or of each, as retained JPEGs."""
        from edge.events import render_jpeg

        wanted = body.get("source")
        if "source" in body and not isinstance(wanted, str):
            raise PayloadError(f"command on {topic}: 'source' is {wanted!r}, expected a source name")
        if wanted is not None and wanted not in live:
            known = ", ".join(live) or "none has given a frame yet"
            raise PayloadError(f"command on {topic}: source {wanted!r} has no frame; sources: {known}")
        size = body.get("size", 640)
        if not isinstance(size, int) or isinstance(size, bool) or not 32 <= size <= 4096:
            raise PayloadError(f"command on {topic}: 'size' is {size!r}, expected pixels from 32 to 4096")
        if self.frames is None or self.publish_frame is None:
            raise PayloadError(f"command on {topic}: this device keeps no frames to snapshot")
        sent: dict[str, Any] = {}
        for name in [wanted] if wanted is not None else live:
            jpeg = render_jpeg(self.frames.latest(name), size)
            if jpeg is None:
                sent[name] = {"error": "the latest frame could not be encoded"}
                continue
            sent[name] = {"topic": self.publish_frame(name, jpeg), "bytes": len(jpeg)}
        return {"snapshots": sent}

    def _allowed_input(self, item: Any, topic: str) -> str:
        """``item`` resolved, when it lies inside the watch folder or is or lies inside an input given."""
        if not isinstance(item, str) or not item:
            raise PayloadError(f"command on {topic}: 'input' is {item!r}, expected an image path")
        path = Path(item).resolve()
        for root in self.snapshot_roots:
            if path == root or (root.is_dir() and path.is_relative_to(root)):
                return str(path)
        allowed = ", ".join(str(r) for r in self.snapshot_roots) or "none: no --watch and no inputs"
        raise PayloadError(
            f"command on {topic}: input {item!r} is outside the watch folder and the inputs; "
            f"snapshot reads only files under them ({allowed})"
        )

    def _newest_watched(self) -> str | None:
        if self.watch is None:
            return None
        try:
            files = [p for p in self.watch.iterdir() if p.is_file() and not p.name.startswith(".")]
        except OSError:
            return None
        return str(max(files, key=lambda p: p.stat().st_mtime)) if files else None

    def _cmd_replay(self, body: dict[str, Any], topic: str) -> dict[str, Any]:
        first = _int(body, "from", topic, 1)
        last = _int(body, "to", topic, first)
        if last - first >= MAX_REPLAY:
            last = first + MAX_REPLAY - 1
        stream = body.get("stream", self.outbox.stream)
        if not isinstance(stream, str):
            raise PayloadError(f"command on {topic}: 'stream' is {stream!r}, expected the stream id string")
        if stream != self.outbox.stream:  # an earlier outbox of this device (its state folder was wiped)
            log.info("replay of stream %s asked; this outbox is stream %s: all of it is gone", stream,
                     self.outbox.stream)
            return {"from": first, "to": last, "sent": 0, "missing": [[first, last]],
                    "last_seq": self.outbox.last_seq, "stream": stream}
        rows, missing = self.outbox.replay(first, last, MAX_REPLAY)
        for _, result_topic, payload in rows:
            self.connection.publish(result_topic, payload, qos=1)
        log.info("replayed %d result(s) %d..%d (%d no longer held)", len(rows), first, last, len(missing))
        return {"from": first, "to": last, "sent": len(rows), "missing": ranges(missing),
                "last_seq": self.outbox.last_seq, "stream": self.outbox.stream}
