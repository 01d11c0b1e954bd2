"""A live H.264 RTSP server for tests (GStreamer's GstRtspServer through PyGObject).

Run by Debian's ``/usr/bin/python3`` (it has python3-gi; the project's venvs cannot import gi), so this
file uses the standard library and gi only. ``tests/streams.py``'s ``RtspServer`` starts it.

The frames come from a folder of PNG/JPEG files, decoded once at start-up by GStreamer and scaled to
``--width`` x ``--height``. ``frames.txt`` in that folder, if present, lists the file shown by each frame
(one name a line, repeats allowed); otherwise every image file in name order is one frame. An ``appsrc``
(is-live) per media is fed by a thread at ``--fps`` in wall-clock time, looping over the frames and starting
at frame 0 when the media starts playing, into ``x264enc tune=zerolatency`` (a key frame every
``--key-int`` frames, ``--slices`` slices per frame) and ``rtph264pay``. x264 repeats SPS/PPS before every
key frame itself; the payloader must not insert them too (``config-interval=-1`` puts a copy before every
IDR *slice*: with several slices that lands inside the access unit, and FFmpeg splits the frame in two).

The stream is ``rtsp://ADDRESS:PORT/MOUNT``; with ``--user``/``--password`` RTSP basic auth is required.
``--shared`` serves one pipeline to all clients (later clients join mid-stream); otherwise every client
gets its own pipeline. Once listening, the bound port is written to ``--ready-file`` (atomically).
SIGTERM/SIGINT stop it cleanly.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def log(message: str) -> None:
    print(f"rtsp_server[{os.getpid()}] {time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def decode_image(path: Path, width: int, height: int, timeout_s: float = 30.0) -> bytes:
    """Decode one PNG/JPEG file to I420 bytes of width x height with a GStreamer pipeline."""
    decoder = "pngdec" if path.suffix.lower() == ".png" else "jpegdec"  # not decodebin: it pulls in -bad
    pipeline = Gst.parse_launch(
        f"filesrc name=src ! {decoder} ! videoconvert ! videoscale ! "
        f"video/x-raw,format=I420,width={width},height={height},pixel-aspect-ratio=1/1 ! "
        "appsink name=sink sync=false max-buffers=1"
    )
    pipeline.get_by_name("src").set_property("location", str(path))
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    try:
        sample = sink.emit("try-pull-sample", int(timeout_s * Gst.SECOND))
        if sample is None:
            bus = pipeline.get_bus()
            message = bus.pop_filtered(Gst.MessageType.ERROR)
            detail = message.parse_error()[0].message if message else "no frame"
            raise RuntimeError(f"cannot decode {path}: {detail}")
        buffer = sample.get_buffer()
        return buffer.extract_dup(0, buffer.get_size())
    finally:
        pipeline.set_state(Gst.State.NULL)


def load_frames(folder: Path, width: int, height: int) -> list[bytes]:
    """The I420 frames in play order: ``frames.txt`` if present, else the image files by name."""
    listing = folder / "frames.txt"
    if listing.exists():
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    else:
        names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not names:
        raise SystemExit(f"no frames in {folder}")
    decoded: dict[str, bytes] = {}
    for name in names:
        if name not in decoded:
            decoded[name] = decode_image(folder / name, width, height)
    return [decoded[name] for name in names]


class Feeder:
    """Pushes the frames into one media's appsrc at the frame rate while the media lives."""

    def __init__(self, appsrc: Gst.Element, frames: list[bytes], fps: float) -> None:
        self.appsrc = appsrc
        self.frames = frames
        self.period = 1.0 / fps
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, name="feeder", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopped.set()

    def playing(self) -> bool:
        return self.appsrc.get_state(0)[1] == Gst.State.PLAYING

    def run(self) -> None:
        # A live camera produces nothing until it plays; frame 0 is the first frame a PLAYING media sends.
        while not self.stopped.is_set() and not self.playing():
            self.stopped.wait(0.005)
        index = 0
        next_time = time.monotonic()
        while not self.stopped.is_set():
            data = self.frames[index % len(self.frames)]
            result = self.appsrc.emit("push-buffer", Gst.Buffer.new_wrapped(data))
            if result == Gst.FlowReturn.FLUSHING and not self.playing():
                # paused or torn down: wait (a paused live source drops time, like a camera)
                while not self.stopped.is_set() and not self.playing():
                    self.stopped.wait(0.01)
                next_time = time.monotonic()
            elif result not in (Gst.FlowReturn.OK, Gst.FlowReturn.FLUSHING):
                log(f"push-buffer: {result.value_nick}; feeder stops")
                return
            index += 1
            next_time += self.period
            delay = next_time - time.monotonic()
            if delay > 0:
                self.stopped.wait(delay)
            elif delay < -1.0:  # far behind (loaded machine): restart the clock rather than burst
                next_time = time.monotonic()


def parent_alive(pid: int, loop: GLib.MainLoop) -> bool:
    """GLib timeout: quit once the test process that started us is gone (so no server outlives a run)."""
    if os.getppid() != pid:  # re-parented: the parent died without stopping us
        log(f"parent {pid} is gone")
        loop.quit()
        return False
    return True


def build_server(args: argparse.Namespace, frames: list[bytes]) -> GstRtspServer.RTSPServer:
    server = GstRtspServer.RTSPServer()
    server.set_address(args.address)
    server.set_service(str(args.port))
    fps = args.fps
    fps_num, fps_den = (int(round(fps * 1000)), 1000) if fps != int(fps) else (int(fps), 1)
    key_int = args.key_int or max(1, int(round(fps)))
    launch = (
        "( appsrc name=src is-live=true format=time do-timestamp=true max-buffers=2 leaky-type=downstream "
        f"caps=video/x-raw,format=I420,width={args.width},height={args.height},"
        f"framerate={fps_num}/{fps_den},pixel-aspect-ratio=1/1 "
        "! queue max-size-buffers=2 leaky=downstream "
        # tune=zerolatency turns sliced threads on: `threads` is then the number of slices per frame
        f"! x264enc tune=zerolatency speed-preset=ultrafast threads={args.slices} bitrate={args.bitrate} "
        f"key-int-max={key_int} "
        "! video/x-h264,profile=constrained-baseline "
        "! rtph264pay name=pay0 pt=96 config-interval=0 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(args.shared)

    def on_media_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        appsrc = media.get_element().get_by_name_recurse_up("src")
        feeder = Feeder(appsrc, frames, fps)
        media.connect("unprepared", lambda _media: feeder.stop())
        feeder.start()
        if args.shared:
            # Preparing is counted: one more of our own keeps the shared pipeline running for good. Else
            # the last client's leaving unprepares it asynchronously, and a client arriving meanwhile
            # gets the cached, unpreparing media and a 503.
            keep = media.connect("prepared", lambda m: GLib.idle_add(keep_prepared, m))
            media.keep_handler = keep
        log(f"media configured (shared={args.shared})")

    def keep_prepared(media: GstRtspServer.RTSPMedia) -> bool:
        if getattr(media, "keep_handler", None) is not None:
            media.disconnect(media.keep_handler)
            media.keep_handler = None
            if not media.prepare(None):
                log("could not keep the shared media prepared")
        return False

    factory.connect("media-configure", on_media_configure)

    if args.user is not None:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password or ""), token)
        auth.set_realm("edge-tests")
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", "media.factory.access", True)
        permissions.add_permission_for_role("viewer", "media.factory.construct", True)
        factory.set_permissions(permissions)

    server.get_mount_points().add_factory(args.mount, factory)
    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=Path, required=True, help="folder of PNG/JPEG frames")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--address", default="127.0.0.1")
    parser.add_argument("--mount", default="/stream")
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--key-int", type=int, default=0, help="frames between key frames (0: one second)")
    parser.add_argument("--bitrate", type=int, default=2000, help="kbit/s")
    parser.add_argument("--slices", type=int, default=1, help="H.264 slices per frame")
    parser.add_argument("--parent-pid", type=int, default=0, help="exit when this parent process is gone")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--shared", action="store_true", help="one pipeline for all clients")
    parser.add_argument("--ready-file", type=Path, help="the bound port is written here once listening")
    args = parser.parse_args()

    Gst.init(None)
    started = time.monotonic()
    frames = load_frames(args.frames, args.width, args.height)
    log(f"{len(frames)} frames decoded in {time.monotonic() - started:.2f} s")
    server = build_server(args, frames)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        log(f"cannot listen on {args.address}:{args.port}")
        return 3
    port = server.get_bound_port()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, loop.quit)
    if args.parent_pid:
        GLib.timeout_add(500, parent_alive, args.parent_pid, loop)
    if args.ready_file:
        partial = args.ready_file.with_name(args.ready_file.name + ".part")
        partial.write_text(f"{port}\n")
        partial.replace(args.ready_file)
    log(f"listening on rtsp://{args.address}:{port}{args.mount}, {args.width}x{args.height}, {args.fps} fps")
    loop.run()
    log("stopped")
    # Leave without the interpreter's teardown: finalizing GStreamer's objects from Python at exit
    # sometimes segfaults (seen once in CI: exit -11 after a clean SIGTERM), and nothing is left to flush.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
