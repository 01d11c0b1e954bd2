"""Model loading and tensor work on real converted digits models (every quantization mode, a package)."""

from __future__ import annotations

import numpy as np
import pytest

from edge.errors import ConfigError, ModelError
from edge.model import (
    TensorQuant,
    dequantize,
    is_fast_uint8,
    load_model,
    quantize,
    to_input_tensor,
)
from tests.assets import DIGIT_MODELS
from tests.edge.helpers import backend_name

# tflite-runtime 2.14 lacks the hybrid FULLY_CONNECTED v12 that TF 2.21's dynamic-range conversion emits.
OLD_RUNTIME_MISSING = {"tflite-runtime": {"digits_dynamic"}}


def runnable(name: str) -> bool:
    return name not in OLD_RUNTIME_MISSING.get(backend_name(), set())


# ------------------------------------------------------------------------------------------ pure functions


def test_quantize_dequantize_round_trip_per_tensor():
    quant = TensorQuant((0.5,), (10,))
    real = np.array([-5.0, 0.0, 1.0, 2.25, 50.0], dtype=np.float32)
    q = quantize(real, quant, np.uint8)
    assert q.dtype == np.uint8
    assert q.tolist() == [0, 10, 12, 14, 110]  # -5/0.5+10 = 0; 2.25/0.5 = 4.5 rounds to even 4
    assert dequantize(q, quant).tolist() == [-5.0, 0.0, 1.0, 2.0, 50.0]


def test_quantize_saturates_to_the_type():
    quant = TensorQuant((1.0,), (0,))
    assert quantize(np.array([-300.0, 300.0]), quant, np.int8).tolist() == [-128, 127]
    assert quantize(np.array([-3.0, 300.0]), quant, np.uint8).tolist() == [0, 255]


def test_per_channel_uses_each_channels_scale_along_the_axis():
    quant = TensorQuant((0.1, 1.0, 10.0), (0, 5, -3), axis=1)
    q = np.array([[10, 10, 10], [0, 5, -3]], dtype=np.int8)
    assert np.allclose(dequantize(q, quant), [[1.0, 5.0, 130.0], [0.0, 0.0, 0.0]])
    real = np.array([[1.0, 5.0, 130.0]])
    assert quantize(real, quant, np.int8).tolist() == [[10, 10, 10]]
    last_axis = TensorQuant((2.0, 4.0), (0, 0), axis=-1)
    assert dequantize(np.array([[1, 1]], np.int8), last_axis).tolist() == [[2.0, 4.0]]


def test_float_tensors_pass_through_dequantize():
    out = dequantize(np.array([1.5, -2.0], np.float16), None)
    assert out.dtype == np.float32 and out.tolist() == [1.5, -2.0]


def test_fast_uint8_only_when_quantization_undoes_normalization():
    identity = TensorQuant((1.0,), (0,))
    assert is_fast_uint8(np.dtype(np.uint8), identity, (0.0,), (1.0,))
    assert not is_fast_uint8(np.dtype(np.int8), identity, (0.0,), (1.0,))
    assert not is_fast_uint8(np.dtype(np.uint8), identity, (127.5,), (127.5,))
    # mean 127.5 / std 127.5 maps pixels to -1..1; scale 1/127.5 with zero point 127 or 128 undoes it
    # within half a quantization step; zero point 126 does not
    for zero, fast in ((127, True), (128, True), (126, False)):
        quant = TensorQuant((1 / 127.5,), (zero,))
        assert is_fast_uint8(np.dtype(np.uint8), quant, (127.5,), (127.5,)) is fast
    assert not is_fast_uint8(np.dtype(np.uint8), TensorQuant((1 / 100,), (128,)), (128.0,), (128.0,))


def test_fused_input_quantization_matches_the_reference():
    from edge.model import InputSpec, TensorSpec

    quant = TensorQuant((0.0078125,), (-3,))
    tensor = TensorSpec(0, "x", (1, 4, 4, 3), np.dtype(np.int8), quant)
    spec = InputSpec(tensor, 4, 4, 3, "NHWC", (120.0, 110.0, 100.0), (60.0, 61.0, 62.0), False)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 4, 3)).astype(np.uint8)
    real = (pixels.astype(np.float64) - np.array(spec.mean)) / np.array(spec.std)
    reference = quantize(real, quant, np.int8)
    assert np.abs(to_input_tensor(pixels, spec)[0].astype(int) - reference.astype(int)).max() <= 1


# --------------------------------------------------------------------------------------- real models


@pytest.fixture(scope="module")
def eval_set(assets):
    x, y = assets.eval_set()
    return x[:150], y[:150]


# The bare digits models take pixels 0..255 as they are and carry no normalization: for the float ones
# the runtime's default ([-1, 1], the ecosystem's) is wrong, so they are told, as a user would be told by
# the warning. The integer ones are fed raw pixels by default, which these also are.
FLOAT_PIXELS = {"mean": 0.0, "std": 1.0}


def predictions(model, x):
    return np.array(
        [int(np.argmax(model.dequantized(model.invoke(to_input_tensor(s, model.input)))[0])) for s in x]
    )


@pytest.mark.parametrize("name", DIGIT_MODELS)
def test_every_quantization_mode_classifies_the_held_out_digits(assets, eval_set, name):
    if not runnable(name):
        with pytest.raises(ModelError, match="newer operator versions"):
            load_model(assets.model(name))
        return
    model = load_model(assets.model(name), **FLOAT_PIXELS)
    x, y = eval_set
    accuracy = float(np.mean(predictions(model, x) == y))
    assert accuracy >= 0.93, f"{name}: accuracy {accuracy:.3f}"
    assert model.backend_name == backend_name()
    assert model.task == "classification"  # guessed from the single (1, 10) output
    assert model.version == 0 and model.manifest is None and model.name == name


def test_quantized_models_agree_with_float(assets, eval_set):
    x, _ = eval_set
    reference = predictions(load_model(assets.model("digits_float32"), **FLOAT_PIXELS), x)
    for name in ("digits_int8", "digits_int8_int8io", "digits_float16"):
        model = load_model(assets.model(name), **FLOAT_PIXELS)
        agreement = float(np.mean(predictions(model, x) == reference))
        assert agreement >= 0.95, f"{name} agrees on {agreement:.3f}"


def test_uint8_model_takes_the_fast_path_and_int8_io_does_not(assets):
    uint8 = load_model(assets.model("digits_int8"))
    int8 = load_model(assets.model("digits_int8_int8io"))
    assert uint8.input.fast_uint8 and uint8.input.tensor.dtype == np.uint8
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
    tensor = to_input_tensor(pixels, uint8.input)
    assert tensor.dtype == np.uint8 and np.array_equal(tensor[0], pixels)  # no float round trip
    assert not int8.input.fast_uint8
    quant = int8.input.tensor.quant
    tensor = to_input_tensor(pixels, int8.input)
    assert tensor.dtype == np.int8
    expected = np.clip(np.rint(pixels / quant.scale[0]) + quant.zero_point[0], -128, 127)
    assert np.array_equal(tensor[0], expected)


def test_outputs_are_dequantized_with_their_own_scale(assets):
    model = load_model(assets.model("digits_int8"))
    raw = model.invoke(np.full((1, 8, 8, 1), 128, np.uint8))[0]
    quant = model.outputs[0].quant
    assert raw.dtype == np.uint8 and quant is not None
    assert np.allclose(
        model.dequantized([raw])[0], (raw.astype(np.float64) - quant.zero_point[0]) * quant.scale[0]
    )


def test_package_gives_name_version_labels_and_task(assets):
    model = load_model(assets.digits_package)
    assert (model.name, model.version, model.task) == ("digits", 1, "classification")
    assert model.labels == tuple(str(d) for d in range(10))
    assert model.manifest is not None and model.path == assets.digits_package


def test_mean_std_for_a_model_without_manifest(assets):
    model = load_model(assets.model("ssd"), std=255.0, warmup=False)
    assert model.input.mean == (0.0, 0.0, 0.0) and model.input.std == (255.0, 255.0, 255.0)
    tensor = to_input_tensor(np.full((64, 64, 3), 255, np.uint8), model.input)
    assert tensor.dtype == np.float32 and np.allclose(tensor, 1.0)
    with pytest.raises(ConfigError, match="2 values"):
        load_model(assets.model("ssd"), mean=(1.0, 2.0))
    with pytest.raises(ConfigError, match="non-zero"):
        load_model(assets.model("ssd"), std=0.0)


def test_labels_file_overrides(assets, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {d}" for d in range(10)) + "\n")
    model = load_model(assets.model("digits_float32"), labels=labels)
    assert model.label(3) == "digit 3" and model.label(42) == "42"
    with pytest.raises(ConfigError, match="cannot read labels file"):
        load_model(assets.model("digits_float32"), labels=tmp_path / "missing.txt")


def test_not_a_tflite_file_is_a_model_error(tmp_path):
    bogus = tmp_path / "model.tflite"
    bogus.write_bytes(b"this is not a flatbuffer at all" * 10)
    with pytest.raises(ModelError, match="model.tflite"):
        load_model(bogus)
    with pytest.raises(ModelError, match="not found"):
        load_model(tmp_path / "missing.tflite")


def test_custom_op_the_backend_lacks_is_named(assets):
    with pytest.raises(ModelError, match="BesselI1e"):
        load_model(assets.model("custom_op"))


def test_wrong_rank_array_is_refused(assets):
    model = load_model(assets.model("digits_float32"))
    with pytest.raises(Exception, match="does not fit the model input"):
        to_input_tensor(np.zeros((2, 8, 8, 1), np.float32), model.input)


def test_bad_options(assets):
    with pytest.raises(ConfigError, match="task 'poetry'"):
        load_model(assets.model("digits_float32"), task="poetry")
    with pytest.raises(ConfigError, match="threads must be at least 1"):
        load_model(assets.model("digits_float32"), threads=0)


def test_threads_are_passed_to_the_interpreter(assets):
    model = load_model(assets.model("digits_float32"), threads=2)
    assert model.threads == 2
    assert model.describe()["threads"] == 2


def test_input_layouts():
    from edge.model import _layout

    assert _layout((1, 224, 224, 3)) == ("NHWC", 224, 224, 3)
    assert _layout((1, 3, 224, 160)) == ("NCHW", 224, 160, 3)
    assert _layout((1, 96, 96, 1)) == ("NHWC", 96, 96, 1)
    assert _layout((1, 4)) == ("other", 0, 0, 0)


def test_nchw_pixels_are_transposed():
    from edge.model import InputSpec, TensorSpec

    spec = InputSpec(
        TensorSpec(0, "x", (1, 3, 2, 5), np.dtype(np.float32), None),
        2,
        5,
        3,
        "NCHW",
        (0.0,) * 3,
        (1.0,) * 3,
        False,
    )
    pixels = np.arange(30, dtype=np.uint8).reshape(2, 5, 3)
    tensor = to_input_tensor(pixels, spec)
    assert tensor.shape == (1, 3, 2, 5) and np.array_equal(tensor[0, 1], pixels[:, :, 1])


def test_raw_task_on_a_tensor_shaped_array(assets):
    from edge.pipeline import Pipeline

    model = load_model(assets.model("digits_float32"), task="raw")
    assert model.input.is_image
    pipeline = Pipeline(model)
    assert pipeline.infer(np.zeros((8, 8, 1), np.float32)).to_json()["outputs"]
