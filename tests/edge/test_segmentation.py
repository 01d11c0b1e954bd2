"""Segmentation decoder: hand-made class maps with known regions, geometry, masks, and the real DeepLabV3.

Synthetic outputs check the arithmetic (shares, the largest region's box, letterbox/crop mapping, top_k and
threshold, one-channel masks, the mask PNG); the real DeepLabV3 MobileNetV2 (PASCAL VOC) from
``tests/third_party.py``, run by a bare interpreter here, checks that a real model's output decodes to what
a person sees on scikit-image's photos: the astronaut is a person filling the left three quarters, chelsea a
cat.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from edge.backends import get_backend
from edge.errors import ModelError
from edge.manifest import TASKS
from edge.preprocess import geometry_for, prepare_image
from edge.tasks import TaskContext, get_decoder
from edge.tasks.segmentation import (
    UNSEEN,
    SegmentationResult,
    decode,
    mask_image,
    region_stats,
    save_mask,
    voc_palette,
)
from tests.third_party import ThirdParty, third_party  # noqa: F401  (third_party: the session fixture)

VOC_COLOURS = {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 8: (64, 0, 0), 15: (192, 128, 128)}


def context(**kwargs: Any) -> TaskContext:
    base: dict[str, Any] = {"output_names": (), "label": lambda i: f"L{i}", "num_labels": 0}
    base.update(kwargs)
    return TaskContext(**base)


def logits(class_map: np.ndarray, classes: int) -> np.ndarray:
    """(1, H, W, classes) float32 logits whose argmax is ``class_map``, with noise below the winner."""
    rng = np.random.default_rng(0)
    out = rng.uniform(-4, 1, (*class_map.shape, classes)).astype(np.float32)
    np.put_along_axis(out, class_map[..., None].astype(np.int64), 3.0, axis=-1)
    return out[None]


def by_index(result: SegmentationResult) -> dict[int, Any]:
    return {c.index: c for c in result.classes}


# ------------------------------------------------------------------------------------------- synthetic


def test_registered_as_a_task() -> None:
    assert get_decoder("segmentation") is decode
    assert "segmentation" in TASKS


def test_two_blobs_the_larger_ones_box_and_shares() -> None:
    class_map = np.zeros((40, 60), np.uint8)
    class_map[5:15, 10:30] = 2  # 200 px, the larger blob
    class_map[30:35, 40:45] = 2  # 25 px
    class_map[20:24, 50:58] = 1  # 32 px
    result = decode([logits(class_map, 3)], context(input_size=(60, 40)))
    total = 40 * 60
    got = by_index(result)
    assert [c.index for c in result.classes] == [0, 2, 1]  # by share
    assert got[2].box == (10.0, 5.0, 30.0, 15.0)  # model-input pixels without a geometry
    assert got[2].share == pytest.approx(225 / total)
    assert got[2].region_share == pytest.approx(200 / total)
    assert got[1].box == (50.0, 20.0, 58.0, 24.0)
    assert got[0].background and not got[1].background and not got[2].background
    assert got[0].share == pytest.approx((total - 257) / total)
    assert got[0].box == (0.0, 0.0, 60.0, 40.0)
    record = result.to_json()
    assert set(record) == {"segments"}
    assert record["segments"][1] == {
        "label": "L2",
        "index": 2,
        "share": round(225 / total, 6),
        "box": [10.0, 5.0, 30.0, 15.0],
        "region_share": round(200 / total, 6),
        "background": False,
    }
    json.dumps(record)  # no arrays in the wire form


def test_regions_are_4_connected() -> None:
    class_map = np.zeros((30, 40), np.uint8)
    class_map[0:20, 5] = 1  # a U: two arms joined by the bottom row, merged although seen apart first
    class_map[0:20, 15] = 1
    class_map[19, 5:16] = 1
    class_map[25, 25] = 2  # touching only at a corner: two regions
    class_map[26, 26] = 2
    class_map[25:27, 30] = 2  # 2 px, the largest class-2 region
    stats = region_stats(class_map)
    assert stats[1] == (20 + 20 + 9, 49, (5, 0, 16, 20))
    assert stats[2] == (4, 2, (30, 25, 31, 27))


def flood_regions(class_map: np.ndarray) -> list[tuple[int, int, tuple[int, int, int, int]]]:
    """Reference: (class, pixels, box) of every 4-connected region, by breadth-first flood fill."""
    height, width = class_map.shape
    seen = np.zeros(class_map.shape, bool)
    regions = []
    for y in range(height):
        for x in range(width):
            if seen[y, x]:
                continue
            index = int(class_map[y, x])
            seen[y, x] = True
            queue, pixels = [(y, x)], []
            while queue:
                cy, cx = queue.pop()
                pixels.append((cy, cx))
                for ny, nx in ((cy - 1, cx), (cy + 1, cx), (cy, cx - 1), (cy, cx + 1)):
                    inside = 0 <= ny < height and 0 <= nx < width
                    if inside and not seen[ny, nx] and class_map[ny, nx] == index:
                        seen[ny, nx] = True
                        queue.append((ny, nx))
            ys, xs = zip(*pixels, strict=True)
            regions.append((index, len(pixels), (min(xs), min(ys), max(xs) + 1, max(ys) + 1)))
    return regions


def test_components_agree_with_a_flood_fill_on_random_maps() -> None:
    rng = np.random.default_rng(1)
    for trial in range(30):
        shape = (int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        classes = int(rng.integers(1, 5))
        # Upsampled noise plus flipped pixels: regions of many shapes and sizes, snakes and specks
        coarse = rng.integers(0, classes, (shape[0] // 4 + 1, shape[1] // 4 + 1))
        class_map = np.kron(coarse, np.ones((4, 4), np.int64))[: shape[0], : shape[1]]
        flip = rng.random(shape) < 0.15
        class_map[flip] = rng.integers(0, classes, int(flip.sum()))
        class_map = class_map.astype(np.uint8)
        regions = flood_regions(class_map)
        stats = region_stats(class_map)
        assert set(stats) == {r[0] for r in regions}, trial
        for index, (pixels, region, box) in stats.items():
            mine = [r for r in regions if r[0] == index]
            largest = max(r[1] for r in mine)
            assert pixels == sum(r[1] for r in mine)
            assert region == largest, (trial, index)
            assert box in [r[2] for r in mine if r[1] == largest], (trial, index)


def test_letterbox_padding_is_left_out_and_boxes_map_back() -> None:
    # 200x100 letterboxed into 64x64: scale 0.32, 16-px bars above and below; the output is half the input's
    # resolution (32x32), so output rows 8..23 cover the picture.
    geometry = geometry_for(200, 100, 64, 64, "letterbox")
    assert (geometry.scale_y, geometry.offset_y) == (0.32, 16.0)
    class_map = np.zeros((32, 32), np.uint8)
    class_map[:8] = 1  # in the bars: not part of the picture
    class_map[24:] = 1
    class_map[10:14, 4:12] = 2  # 32 px
    class_map[20:22, 20:22] = 2  # 4 px
    result = decode([logits(class_map, 3)], context(input_size=(64, 64), geometry=geometry))
    got = by_index(result)
    assert set(got) == {0, 2}
    total = 16 * 32
    assert got[2].share == pytest.approx(36 / total)
    assert got[2].region_share == pytest.approx(32 / total)
    # output cols 4..12 -> model x 8..24 -> original 25..75; rows 10..14 -> model y 20..28 -> 12.5..37.5
    assert got[2].box == pytest.approx((25.0, 12.5, 75.0, 37.5))
    assert got[0].box == pytest.approx((0.0, 0.0, 200.0, 100.0))
    assert sum(c.share for c in result.classes) == pytest.approx(1.0)


def test_top_k_and_threshold() -> None:
    class_map = np.zeros((10, 10), np.uint8)
    class_map[0:2, :] = 1  # 20 %
    class_map[2:5, :] = 2  # 30 %
    class_map[5:6, :] = 3  # 10 %
    class_map[6:6, :] = 4
    class_map[9, 9] = 4  # 1 %
    out = logits(class_map, 5)
    result = decode([out], context(input_size=(10, 10), top_k=2))
    assert [c.index for c in result.classes] == [0, 2, 1]  # background kept, 2 others
    result = decode([out], context(input_size=(10, 10), threshold=0.1))
    assert [c.index for c in result.classes] == [0, 2, 1, 3]
    result = decode([out], context(input_size=(10, 10), threshold=0.4))
    assert [c.index for c in result.classes] == []  # background 39 % is under it too
    result = decode([out], context(input_size=(10, 10), top_k=0))
    assert [c.index for c in result.classes] == [0]


def test_background_from_the_labels() -> None:
    class_map = np.zeros((4, 4), np.uint8)
    class_map[:2] = 1
    out = logits(class_map, 2)
    voc = decode([out], context(input_size=(4, 4), label=["background", "person"].__getitem__, num_labels=2))
    assert [c.background for c in voc.classes] == [True, False]
    city = decode([out], context(input_size=(4, 4), label=["road", "car"].__getitem__, num_labels=2))
    assert not any(c.background for c in city.classes)
    assert [c.label for c in city.classes] == ["road", "car"]


def test_one_channel_masks_sigmoid_and_logits() -> None:
    yy, xx = np.mgrid[:256, :256]
    inside = (xx - 128) ** 2 / 60**2 + (yy - 140) ** 2 / 90**2 < 1
    sigmoid = np.where(inside, 0.8, 0.2).astype(np.float32)[None, ..., None]
    result = decode([sigmoid], context(input_size=(256, 256), top_k=1))
    got = by_index(result)
    assert got[0].background and not got[1].background
    assert got[1].share == pytest.approx(inside.mean())
    assert got[1].box == (69.0, 51.0, 188.0, 230.0)
    logit = np.where(inside, 2.5, -1.5).astype(np.float32)[None, ..., None]  # outside 0..1: cut at 0
    assert decode([logit], context(input_size=(256, 256))).classes == result.classes
    assert result.class_map.dtype == np.uint8 and result.class_map.shape == (256, 256)


def test_class_id_maps_and_wide_class_counts() -> None:
    ids = np.zeros((1, 8, 8), np.float32)
    ids[0, 2:4, 2:6] = 3.0
    result = decode([ids], context(input_size=(8, 8)))
    assert by_index(result)[3].box == (2.0, 2.0, 6.0, 4.0)
    wide = np.zeros((1, 4, 4, 300), np.float32)
    wide[0, :, :, 299] = 1.0
    result = decode([wide], context(input_size=(4, 4)))
    assert result.class_map.dtype == np.uint16
    assert [c.index for c in result.classes] == [299]


@pytest.mark.parametrize(
    "shapes", [[], [(1, 10)], [(1, 8, 8, 3), (1, 8, 8, 3)], [(8, 8, 3)], [(2, 8, 8, 3)], [(1, 8, 8, 0)]]
)
def test_refuses_other_outputs(shapes: list[tuple[int, ...]]) -> None:
    with pytest.raises(ModelError, match="segmentation"):
        decode([np.zeros(s, np.float32) for s in shapes], context(input_size=(8, 8)))


def test_mask_png_has_the_original_size_and_colours(tmp_path: Path) -> None:
    geometry = geometry_for(200, 100, 64, 64, "letterbox")
    class_map = np.zeros((32, 32), np.uint8)
    class_map[:8] = 1  # letterbox bars: must not show in the mask
    class_map[24:] = 1
    class_map[10:14, 4:12] = 2  # original x 25..75, y 12.5..37.5
    result = decode([logits(class_map, 3)], context(input_size=(64, 64), geometry=geometry))
    path = save_mask(result, tmp_path / "masks" / "frame.png")
    with Image.open(path) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "P", (200, 100))
        rgb = image.convert("RGB")
        assert rgb.getpixel((50, 25)) == VOC_COLOURS[2]
        assert rgb.getpixel((150, 80)) == VOC_COLOURS[0]
        colours = rgb.getcolors()
        assert colours is not None and VOC_COLOURS[1] not in {c for _, c in colours}
        ids = np.asarray(image)
    assert set(np.unique(ids).tolist()) == {0, 2}
    assert (ids == 2).sum() == pytest.approx(50 * 25, rel=0.1)
    assert list(tmp_path.joinpath("masks").iterdir()) == [path]  # no temp file left behind
    # Another size (a thumbnail, or the picture at twice its size) scales the same map.
    bigger = result.save_mask(tmp_path / "big.png", (400, 200))
    with Image.open(bigger) as image:
        assert image.size == (400, 200)
        assert image.getpixel((100, 50)) == 2


def test_mask_of_a_crop_marks_what_the_model_never_saw() -> None:
    # 100x200 (portrait) cropped to 64x64: the model sees original rows 50..150 only.
    geometry = geometry_for(100, 200, 64, 64, "crop")
    out = logits(np.zeros((64, 64), np.uint8), 2)
    result = decode([out], context(input_size=(64, 64), geometry=geometry))
    assert by_index(result)[0].box == pytest.approx((0.0, 50.0, 100.0, 150.0))
    ids = np.asarray(mask_image(result))
    assert ids.shape == (200, 100)
    assert (ids[:50] == UNSEEN).all() and (ids[150:] == UNSEEN).all() and (ids[50:150] == 0).all()
    assert voc_palette()[3 * UNSEEN : 3 * UNSEEN + 3] == bytes((224, 224, 192))  # VOC's void colour


def test_palette_is_pascal_vocs() -> None:
    palette = voc_palette()
    assert len(palette) == 768
    for index, colour in VOC_COLOURS.items():
        assert tuple(palette[3 * index : 3 * index + 3]) == colour


# ------------------------------------------------------------------------------------ the real DeepLabV3


@pytest.fixture(scope="module")
def deeplab(third_party: ThirdParty) -> tuple[Any, list[str]]:  # noqa: F811
    path = third_party.models["segmentation"]
    with zipfile.ZipFile(io.BytesIO(path.read_bytes())) as archive:
        labels = archive.read("labelmap.txt").decode().splitlines()
    interpreter = get_backend("auto").interpreter_class()(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter, labels


def run_deeplab(deeplab: tuple[Any, list[str]], pixels: np.ndarray) -> np.ndarray:
    interpreter, _ = deeplab
    x = (pixels.astype(np.float32)[None] - 127.5) / 127.5
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    output: np.ndarray = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    return output


def segment_photo(
    deeplab: tuple[Any, list[str]], path: Path, mode: str = "stretch"
) -> tuple[SegmentationResult, tuple[int, int]]:
    _, labels = deeplab
    with Image.open(path) as image:
        picture = image.convert("RGB")
    if mode == "stretch":  # the bare way: resize to 257x257 RGB
        pixels = np.asarray(picture.resize((257, 257), Image.Resampling.BILINEAR), np.uint8)
        geometry = geometry_for(picture.width, picture.height, 257, 257, "stretch")
    else:
        prepared = prepare_image(picture, 257, 257, 3, mode)
        assert prepared.geometry is not None
        pixels, geometry = prepared.pixels, prepared.geometry
    output = run_deeplab(deeplab, pixels)
    assert output.shape == (1, 257, 257, 21)
    ctx = context(
        label=labels.__getitem__, num_labels=len(labels), input_size=(257, 257), geometry=geometry, top_k=5
    )
    return decode([output], ctx), picture.size


def test_deeplab_finds_the_astronaut(deeplab: tuple[Any, list[str]], assets: Any) -> None:
    result, size = segment_photo(deeplab, assets.images["astronaut.jpg"])
    assert size == (512, 512)
    got = {c.label: c for c in result.classes}
    person = got["person"]
    assert result.classes[0].label in ("person", "background")
    assert 0.3 < person.share < 0.65
    assert person.region_share > 0.9 * person.share  # one body, not specks
    # She fills the left three quarters of the photo, from near its top (her head) to the bottom edge.
    x0, y0, x1, y1 = person.box
    assert x0 < 40 and 300 < x1 < 450 and y0 < 70 and y1 > 480
    assert got["background"].background and not person.background


def test_deeplab_finds_the_cat_letterboxed_or_stretched(
    deeplab: tuple[Any, list[str]], assets: Any, tmp_path: Path
) -> None:
    stretched, size = segment_photo(deeplab, assets.images["chelsea.gif"])
    assert size == (451, 300)
    assert stretched.classes[0].label == "cat"
    cat = stretched.classes[0]
    assert cat.share > 0.5
    x0, y0, x1, y1 = cat.box
    assert x0 < 100 and x1 > 300 and y0 < 60 and y1 > 260  # the cat fills most of the frame
    letterboxed, _ = segment_photo(deeplab, assets.images["chelsea.gif"], "letterbox")
    boxed = {c.label: c for c in letterboxed.classes}["cat"]
    assert boxed.share == pytest.approx(cat.share, abs=0.08)  # shares count the picture, not the bars
    assert boxed.box == pytest.approx(cat.box, abs=30)  # both mapped to original pixels
    path = save_mask(letterboxed, tmp_path / "chelsea.png")
    with Image.open(path) as image:
        assert image.size == (451, 300)
        assert image.convert("RGB").getpixel((225, 150)) == VOC_COLOURS[8]  # the cat's colour
        ids = np.asarray(image)
    assert (ids == 8).mean() == pytest.approx(boxed.share, abs=0.03)


def test_deeplab_on_coffee_finds_no_person_or_cat(deeplab: tuple[Any, list[str]], assets: Any) -> None:
    result, _ = segment_photo(deeplab, assets.images["coffee.webp"])
    labels = [c.label for c in result.classes]
    assert labels[0] == "background"
    assert "person" not in labels and "cat" not in labels


def test_pipeline_gives_segments_in_the_record(
    third_party: ThirdParty,  # noqa: F811
    deeplab: tuple[Any, list[str]],
    assets: Any,
) -> None:
    from edge.model import load_model
    from edge.pipeline import Pipeline

    # Labels, normalization and task given, so this does not depend on reading the standard metadata.
    path, labels = third_party.models["segmentation"], deeplab[1]
    model = load_model(path, task="segmentation", mean=127.5, std=127.5, labels=labels)
    record = Pipeline(model).infer(assets.images["astronaut.jpg"]).to_json()
    assert record["error"] is None and record["task"] == "segmentation"
    segments = {s["label"]: s for s in record["segments"]}
    assert segments["person"]["share"] > 0.3
    assert segments["background"]["background"] is True
