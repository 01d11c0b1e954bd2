"""``edge run --track``: a square moving through a real video keeps one track id.

The SSD test model answers with fixed quadrant boxes scored by the quadrant's red mean (tests/assets.py); a
48 px red square on 128x128 frames moves TL -> TR -> BR -> BL, four frames in each quadrant, encoded as H.264.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.assets import Assets
from tests.edge.helpers import edge_cli
from tests.streams import write_video

pytest_plugins = ["tests.streams"]


def moving_square(path: Path) -> Path:
    frames = []
    for qx, qy in [(0, 0), (64, 0), (64, 64), (0, 64)]:
        for step in range(4):
            image = np.zeros((128, 128, 3), np.uint8)
            x, y = qx + 4 + 4 * step, qy + 6
            image[y : y + 48, x : x + 48, 0] = 255
            frames.append(image)
    return write_video(path, frames, fps=15)


def test_edge_run_track_gives_one_id_to_the_moving_square(assets: Assets, tmp_path: Path) -> None:
    clip = moving_square(tmp_path / "square.mp4")
    done = edge_cli("run", str(assets.model("ssd")), str(clip), "--std", "255", "--resize", "letterbox",
                    "--track", "--json", "--source-name", "yard")
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(records) == 16 and all(r["source"] == "yard" for r in records)
    objects = [o for r in records for o in r["objects"]]
    assert len(objects) == 16 and {o["track_id"] for o in objects} == {1}
    quadrants = {(int(o["box"][0] // 64), int(o["box"][1] // 64)) for o in objects}
    assert quadrants == {(0, 0), (1, 0), (1, 1), (0, 1)}  # it did move through every quadrant

    without = edge_cli("run", str(assets.model("ssd")), str(clip), "--std", "255", "--resize", "letterbox",
                       "--json")
    assert without.returncode == 0, without.stderr
    plain = [o for line in without.stdout.splitlines() for o in json.loads(line)["objects"]]
    assert len(plain) == 16 and not any("track_id" in o for o in plain)

