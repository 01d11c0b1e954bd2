"""tests/streams.py's stream servers and video helpers, checked with PyAV: real servers, real decoding."""

from __future__ import annotations

import base64
import io
import itertools
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from skimage import data

from tests.streams import (
    MjpegServer,
    RtspServer,
    closest_image,
    fit_image,
    frames_from_images,
    mean_color,
    open_stream,
    read_frames,
)

pytest_plugins = ["tests.streams"]  # the rtsp_server, mjpeg_server and video_file fixtures

PHOTOS = (data.astronaut(), data.coffee(), data.chelsea())


def photo_frames(size: tuple[int, int], hold: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(frames, the three fitted photos they show)."""
    frames = frames_from_images(PHOTOS, size, hold)
    return frames, [frames[i * hold] for i in range(len(PHOTOS))]


def runs(indexes: list[int]) -> list[int]:
    """Consecutive duplicates collapsed: [0, 0, 1, 1, 2] -> [0, 1, 2]."""
    return [key for key, _ in itertools.groupby(indexes)]


def decode_rgb(container: av.container.InputContainer) -> Iterator[np.ndarray]:
    """The container's video frames as RGB arrays (no slice threading: see tests/streams.py)."""
    stream = container.streams.video[0]
    stream.codec_context.thread_type = "NONE"
    return (frame.to_ndarray(format="rgb24") for frame in container.decode(stream))


# ----------------------------------------------------------------------------------------------- frames


def test_frames_from_images_fits_holds_and_accepts_paths_floats_and_gray(tmp_path: Path) -> None:
    png = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()).save(png)
    images = [data.chelsea(), png, data.camera(), data.astronaut() / 255.0]
    frames = frames_from_images(images, size=(640, 360), hold=3)

    assert len(frames) == 12
    assert all(f.shape == (360, 640, 3) and f.dtype == np.uint8 for f in frames)
    assert frames[0] is frames[2] and frames[3] is not frames[2]
    # chelsea (451x300) scaled by 1.2 to 541x360, centred: black bars left and right
    assert frames[0][:, :49].max() == 0 and frames[0][:, -50:].max() == 0 and frames[0][:, 60:580].mean() > 50
    assert np.abs(mean_color(frames[3]) - mean_color(fit_image(data.coffee(), (640, 360)))).max() < 1
    assert np.ptp(frames[6][:, 200:440].astype(int), axis=2).max() == 0  # grayscale camera -> equal channels
    assert np.abs(mean_color(frames[9]) - mean_color(fit_image(data.astronaut(), (640, 360)))).max() < 1
    shown = [closest_image(f, [frames[i] for i in (0, 3, 6, 9)]) for f in frames]
    assert shown == [k // 3 for k in range(12)]


# ------------------------------------------------------------------------------------------------- RTSP


@pytest.mark.parametrize(("size", "fps"), [((640, 360), 15), ((1280, 720), 30)], ids=["360p15", "720p30"])
def test_rtsp_serves_live_h264_that_follows_the_images(rtsp_server, size: tuple[int, int], fps: int) -> None:
    hold = fps // 2
    frames, photos = photo_frames(size, hold)
    server: RtspServer = rtsp_server(frames, fps=fps)
    count = 4 * hold + 5

    with open_stream(server.url) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.codec_context.width, stream.codec_context.height) == size  # from the SDP, at once
        received, times = [], []
        for frame in decode_rgb(container):
            received.append(frame)
            times.append(time.monotonic())
            if len(received) == count:
                break

    assert all(frame.shape == (size[1], size[0], 3) for frame in received)
    shown = [closest_image(frame, photos) for frame in received]
    assert shown[0] == 0  # each client gets its own pipeline, from frame 0
    assert runs(shown) == [0, 1, 2, 0, 1][: len(runs(shown))] and len(runs(shown)) >= 4, shown
    means = [mean_color(photo) for photo in photos]
    for frame, index in zip(received, shown, strict=True):
        assert np.abs(mean_color(frame) - means[index]).max() < 8
    # live: paced at the frame rate, not a burst of buffered frames
    assert times[-1] - times[0] > 0.7 * (count - 1) / fps


def test_rtsp_basic_auth_refuses_wrong_credentials(rtsp_server) -> None:
    server: RtspServer = rtsp_server(fps=15, size=(320, 240), user="cam", password="s3cret")
    assert server.url == f"rtsp://cam:s3cret@127.0.0.1:{server.port}/stream"

    assert server.describe() == 401
    assert server.describe("cam", "wrong") == 401
    assert server.describe("cam", "s3cret") == 200
    for url in (server.bare_url, server.url_for("cam", "wrong")):
        with pytest.raises(av.error.HTTPUnauthorizedError):
            open_stream(url, timeout=10)
    assert len(read_frames(server.url, 3)) == 3


def test_rtsp_kill_ends_the_stream_and_restart_serves_again_on_the_same_port(rtsp_server) -> None:
    server: RtspServer = rtsp_server(fps=15, size=(320, 240))
    port = server.port
    container = open_stream(server.url, timeout=(20, 5))
    frames = decode_rgb(container)
    try:
        for _ in range(5):
            next(frames)
        server.kill()
        killed_at = time.monotonic()
        with pytest.raises((StopIteration, av.FFmpegError, OSError)):
            for _ in range(30):  # the dropped TCP connection ends the stream (PyAV: a plain EOF)
                next(frames)
        assert time.monotonic() - killed_at < 5
    finally:
        container.close()
    with pytest.raises(av.error.ConnectionRefusedError):
        open_stream(server.url, timeout=5)

    server.restart()
    assert server.port == port
    assert len(read_frames(server.url, 5)) == 5

    server.stop()  # SIGTERM: a clean exit
    assert server.process is not None and server.process.returncode == 0 and "stopped" in server.log()
    server.start()
    assert server.port == port and len(read_frames(server.url, 2)) == 2


def test_rtsp_shared_media_lets_a_late_client_join_mid_stream(rtsp_server) -> None:
    frames, photos = photo_frames((320, 240), hold=15)
    server: RtspServer = rtsp_server(frames, fps=15, shared=True)  # one pipeline, running from start()
    with open_stream(server.url) as first:
        first_frames = decode_rgb(first)
        seen = [closest_image(next(first_frames), photos) for _ in range(3)]
        for _ in range(40):  # until the pipeline shows image 1 (and so is past frame 15)
            if seen[-1] == 1:
                break
            seen.append(closest_image(next(first_frames), photos))
        late = read_frames(server.url, 3, timeout=(20, 5))
        seen += [closest_image(next(first_frames), photos) for _ in range(3)]  # the first client still reads
    assert seen[-4] == 1, seen
    # the late client joined the running pipeline at its next key frame, not a new pipeline at frame 0
    assert closest_image(late[0], photos) in (1, 2)


def test_rtsp_multi_slice_frames_decode_whole(rtsp_server) -> None:
    frames, photos = photo_frames((640, 360), hold=8)
    server: RtspServer = rtsp_server(frames, fps=15, slices=3)  # as many IP cameras send
    received = read_frames(server.url, 20)  # PyAV's default slice-threaded decoder
    for frame, index in zip(received, [k // 8 for k in range(20)], strict=True):
        assert np.abs(frame.astype(float) - photos[index]).mean() < 5  # the whole picture, every frame


# ------------------------------------------------------------------------------------------------ MJPEG


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(auth).encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), b""


@pytest.mark.parametrize("content_length", [True, False], ids=["content-length", "boundary-only"])
def test_mjpeg_stream_and_snapshot_decode(mjpeg_server, content_length: bool) -> None:
    frames, photos = photo_frames((320, 240), hold=4)
    server: MjpegServer = mjpeg_server(frames, fps=25, content_length=content_length)

    for format in ("mpjpeg", None):  # named, and auto-detected from the multipart content type
        with open_stream(server.url, format=format, timeout=(10, 5)) as container:
            assert container.format.name == "mpjpeg"
            assert container.streams.video[0].codec_context.name == "mjpeg"
            received = [frame for frame, _ in zip(decode_rgb(container), range(14), strict=False)]
        assert [closest_image(f, photos) for f in received] == [(k // 4) % 3 for k in range(14)]
        assert all(f.shape == (240, 320, 3) for f in received)

    status, headers, body = http_get(server.snapshot_url)
    assert status == 200 and headers["Content-Type"] == "image/jpeg"
    snapshot = np.asarray(Image.open(io.BytesIO(body)).convert("RGB"))
    assert snapshot.shape == (240, 320, 3) and closest_image(snapshot, photos) == 0
    assert server.requests == ["/stream", "/stream", "/snapshot.jpg"]


def test_mjpeg_basic_auth(mjpeg_server) -> None:
    server: MjpegServer = mjpeg_server(fps=20, user="esp", password="pw")
    status, headers, _ = http_get(server.url_for("/snapshot.jpg"))
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert http_get(server.url_for("/snapshot.jpg"), auth=("esp", "nope"))[0] == 401
    assert http_get(server.url_for("/snapshot.jpg"), auth=("esp", "pw"))[0] == 200
    for url in (server.url_for("/stream"), server.url_for("/stream", "esp", "nope")):
        with pytest.raises(av.error.HTTPUnauthorizedError):
            open_stream(url, format="mpjpeg", timeout=5)
    assert len(read_frames(server.url, 3, format="mpjpeg")) == 3


def test_mjpeg_stall_keeps_the_connection_open_and_silent(mjpeg_server) -> None:
    server: MjpegServer = mjpeg_server(fps=20)
    with open_stream(server.url, format="mpjpeg", timeout=(10, 5)) as container:
        frames = decode_rgb(container)
        next(frames)
        server.stall(1.0)
        stalled_at, sent = time.monotonic(), server.parts_sent
        time.sleep(0.5)
        assert server.parts_sent <= sent + 1 and server.clients == 1  # silent, still connected
        times = []
        for _ in range(8):
            next(frames)
            times.append(time.monotonic())
    # at most two frames were on their way before the stall; the rest came after it, at the frame rate
    assert times[-1] - stalled_at > 1.0 + 4 * 0.05
    assert np.diff(times)[-4:].max() < 0.3


def test_mjpeg_corrupt_sends_garbage_parts_then_good_ones(mjpeg_server) -> None:
    server: MjpegServer = mjpeg_server(fps=25)
    results: list[str] = []
    with open_stream(server.url, format="mpjpeg", timeout=(10, 5)) as container:
        stream = container.streams.video[0]
        for packet in container.demux(stream):
            if len(results) == 3:
                server.corrupt(3)
            try:
                results.append("ok" if packet.decode() else "empty")
            except av.error.InvalidDataError:
                results.append("bad")
            if len(results) == 14:
                break
    assert results[:3] == ["ok"] * 3 and results[-3:] == ["ok"] * 3
    assert "".join(r[0] for r in results).count("bbb") == 1 and results.count("bad") == 3, results


def test_mjpeg_stop_ends_the_stream_and_restart_serves_on_the_same_port(mjpeg_server) -> None:
    server: MjpegServer = mjpeg_server(fps=20)
    port = server.port
    with open_stream(server.url, format="mpjpeg", timeout=(10, 5)) as container:
        frames = decode_rgb(container)
        next(frames)
        server.stop()
        stopped_at = time.monotonic()
        with pytest.raises((StopIteration, av.FFmpegError, OSError)):
            for _ in range(10):
                next(frames)
        assert time.monotonic() - stopped_at < 2
    with pytest.raises(av.error.ConnectionRefusedError):
        open_stream(server.url, format="mpjpeg", timeout=5)

    server.restart()
    assert server.port == port and len(read_frames(server.url, 3, format="mpjpeg")) == 3


# ------------------------------------------------------------------------------------------- video files

CODECS = [
    ("h264.mp4", "h264", "yuv420p"), ("h264.mkv", "h264", "yuv420p"), ("mjpeg.avi", "mjpeg", "yuvj420p"),
    ("mjpeg.mkv", "mjpeg", "yuvj420p"), ("vp9.webm", "vp9", "yuv420p"), ("mpeg4.mp4", "mpeg4", "yuv420p"),
    ("hevc.mkv", "hevc", "yuv420p"),
]


@pytest.mark.parametrize(("name", "codec", "pix_fmt"), CODECS, ids=[c[0] for c in CODECS])
def test_video_files_decode_to_every_frame_in_order(video_file, name: str, codec: str, pix_fmt: str) -> None:
    frames, photos = photo_frames((320, 240), hold=8)
    path = video_file(name, frames, fps=15, codec=codec, gop=8)

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == codec and stream.codec_context.pix_fmt == pix_fmt
        assert stream.average_rate == 15
        decoded = list(container.decode(stream))
    assert len(decoded) == 24
    shown = [closest_image(f.to_ndarray(format="rgb24"), photos) for f in decoded]
    assert shown == [k // 8 for k in range(24)]
    key_frames = [i for i, f in enumerate(decoded) if f.key_frame]
    assert key_frames == (list(range(24)) if codec == "mjpeg" else [0, 8, 16])  # the fixed GOP
    assert decoded[-1].time == pytest.approx(23 / 15, abs=0.01)


def count_decoded(path: Path) -> tuple[int, int]:
    """(frames decoded, packets the decoder refused) over the whole file."""
    frames = errors = 0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            try:
                frames += len(packet.decode())
            except av.error.InvalidDataError:
                errors += 1
    return frames, errors


@pytest.mark.parametrize(("name", "refused"), [("bad.mp4", True), ("bad.mkv", False), ("bad.avi", False)])
def test_corrupt_video_files_lose_frames_part_way(video_file, name: str, refused: bool) -> None:
    frames, _ = photo_frames((320, 240), hold=8)
    overwritten = video_file("overwritten-" + name, frames, corrupt="overwrite")
    truncated = video_file("truncated-" + name, frames, corrupt="truncate")

    decoded, errors = count_decoded(overwritten)
    assert 0 < decoded < 24
    assert (errors > 0) is refused  # .mp4: the decoder gets the damaged samples and refuses them
    decoded, _ = count_decoded(truncated)
    assert 0 < decoded < 24
