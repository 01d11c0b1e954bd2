"""Backend registry and the Edge TPU delegate path (no delegate library here: the fallback is real)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from edge.backends import BACKENDS, get_backend, installed_backends
from edge.backends.edgetpu import check_device, library_name
from edge.errors import BackendError, ConfigError
from edge.model import load_model
from edge.package import EDGETPU_MODEL_NAME, load_model_source, read_package, write_package
from tests.edge.helpers import backend_name


def test_auto_picks_an_installed_backend_and_honours_edge_backend(monkeypatch):
    monkeypatch.delenv("EDGE_BACKEND", raising=False)
    first = installed_backends()[0]
    assert get_backend("auto").name == first.name
    chosen = installed_backends()[-1]
    monkeypatch.setenv("EDGE_BACKEND", chosen.name)
    assert get_backend("auto") is chosen
    assert get_backend(chosen.name) is chosen


def test_preference_order_is_litert_then_tflite_runtime_then_tensorflow():
    assert list(BACKENDS) == ["litert", "tflite-runtime", "tensorflow"]


def test_backend_not_installed_names_the_package_to_install():
    missing = [b for b in BACKENDS.values() if not b.installed()]
    assert missing, "every environment lacks at least one backend"
    with pytest.raises(BackendError, match=f"pip install {missing[0].package}"):
        get_backend(missing[0].name)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown backend 'onnx'"):
        get_backend("onnx")


def test_profile_spelling_of_a_backend_is_accepted():
    backend = BACKENDS["litert"]
    if backend.installed():
        assert get_backend("ai-edge-litert") is backend
    else:
        with pytest.raises(BackendError, match="pip install ai-edge-litert"):
            get_backend("ai-edge-litert")


@pytest.mark.parametrize("device", ["usb", "usb:0", "usb:3", "pci", "pci:1", "PCI:0"])
def test_valid_edgetpu_devices(device):
    assert check_device(device) == device.lower()


@pytest.mark.parametrize("device", ["usb:", "usb:x", "gpu:0", "usb:0:1", ":0"])
def test_invalid_edgetpu_device_is_a_config_error(device):
    with pytest.raises(ConfigError, match="usb, usb:N, pci or pci:N"):
        check_device(device)


def test_missing_delegate_falls_back_to_cpu_with_one_warning(assets, caplog):
    caplog.set_level(logging.WARNING, logger="edge.model")
    path = assets.model("digits_int8")
    first = load_model(path, delegate="edgetpu", device="usb:0")
    second = load_model(path, delegate="edgetpu", device="usb:0")
    warnings = [r for r in caplog.records if "accelerator unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert library_name() in warnings[0].getMessage()
    assert first.accelerator is None and second.accelerator is None
    assert first.invoke(np.zeros((1, 8, 8, 1), np.uint8))[0].shape == (1, 10)  # it really runs, on the CPU


def test_require_accelerator_fails_clearly(assets):
    with pytest.raises(BackendError, match=r"libedgetpu\.so\.1.*for device pci:0"):
        load_model(assets.model("digits_int8"), delegate="edgetpu", device="pci:0", require_accelerator=True)
    with pytest.raises(BackendError, match="no accelerator"):
        load_model(assets.model("digits_int8"), require_accelerator=True)


def test_delegate_library_path_that_does_not_exist(assets, tmp_path):
    with pytest.raises(BackendError, match="libmissing.so"):
        load_model(
            assets.model("digits_int8"), delegate=str(tmp_path / "libmissing.so"), require_accelerator=True
        )


def test_package_with_edgetpu_variant_uses_the_cpu_model_when_the_delegate_is_missing(
    assets, tmp_path, caplog
):
    package = read_package(assets.digits_package)
    files = dict(package.files)
    # Stand-in for the compiled variant: a different model, so we can tell which one was loaded.
    files[EDGETPU_MODEL_NAME] = assets.model("ssd").read_bytes()
    path = tmp_path / "digits-tpu.edgepkg"
    write_package(path, package.manifest, files)
    assert load_model_source(path).package.edgetpu_model_bytes is not None
    caplog.set_level(logging.WARNING, logger="edge.model")
    model = load_model(path)  # the Edge TPU variant makes it try the delegate without being asked
    assert model.accelerator is None
    assert model.input.tensor.shape == (1, 8, 8, 1)  # the CPU model, not the variant
    assert any("accelerator unavailable" in r.getMessage() for r in caplog.records)
    with pytest.raises(BackendError):
        load_model(path, require_accelerator=True)


def test_the_backend_in_use_is_reported(assets):
    assert load_model(assets.model("digits_float32")).backend_name == backend_name()
