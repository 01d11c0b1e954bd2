# Two commands do all set-up on a fresh Debian / Raspberry Pi OS machine with Python 3.11:
#   make demo   the main job (train, convert, report; see README)
#   make test   every test, in three environments (full, device-only, tflite-runtime + numpy<2)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
VENV_EDGE := .venv-edge
VENV_LEGACY := .venv-legacy
PIP_FLAGS := --quiet --disable-pip-version-check
ROOT := $(abspath .)

# Extra set-up and test targets, one file each in mk/ (a browser for the dashboard's tests, a real Home
# Assistant); a file there may add prerequisites to test-main through TEST_MAIN_DEPS.
.DEFAULT_GOAL := setup
TEST_MAIN_DEPS :=
-include mk/*.mk

.PHONY: demo test lint test-main test-edge test-legacy bench setup system-deps clean

setup: $(VENV)/.installed

# Debian packages the project needs: python3-venv (for venvs), mosquitto (tests start their own broker) and
# GStreamer's RTSP server for Debian's /usr/bin/python3 (tests/stream_servers/rtsp_server.py: the tests' live
# H.264 camera; gir1.2-gst-rtsp-server-1.0 brings plugins-base/-good/-bad with it, x264enc is in -ugly).
system-deps:
	@missing=""; \
	$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || missing="$$missing python3-venv"; \
	command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || missing="$$missing mosquitto mosquitto-clients"; \
	/usr/bin/python3 -c "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer" \
	  2>/dev/null || missing="$$missing python3-gi gir1.2-gst-rtsp-server-1.0"; \
	command -v gst-inspect-1.0 >/dev/null 2>&1 || missing="$$missing gstreamer1.0-tools"; \
	gst-inspect-1.0 appsrc >/dev/null 2>&1 || missing="$$missing gstreamer1.0-plugins-base"; \
	gst-inspect-1.0 rtph264pay >/dev/null 2>&1 || missing="$$missing gstreamer1.0-plugins-good"; \
	gst-inspect-1.0 x264enc >/dev/null 2>&1 || missing="$$missing gstreamer1.0-plugins-ugly"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "error: missing Debian packages:$$missing; run: sudo apt-get install$$missing" >&2; exit 2; \
	  fi; \
	fi

# Full environment: device side + TensorFlow (convert) + test tools.
$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[convert,dev,metrics,postgres,dashboard]'
	touch $@

# Device-only environment: the default install (no TensorFlow) plus pytest.
$(VENV_EDGE)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV_EDGE)
	$(VENV_EDGE)/bin/pip install $(PIP_FLAGS) -e '.[metrics]' pytest flatbuffers
	touch $@

# Legacy device environment: tflite-runtime with numpy<2 and no ai-edge-litert.
$(VENV_LEGACY)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV_LEGACY)
	$(VENV_LEGACY)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	$(VENV_LEGACY)/bin/pip install $(PIP_FLAGS) 'numpy<2' pillow 'paho-mqtt>=2,<3' cryptography 'tflite-runtime==2.14.0' pytest \
	  'av<19' inotify_simple flatbuffers 'prometheus_client>=0.17'
	@echo "(pip's note that ai-edge-litert is not installed is expected: this environment tests tflite-runtime alone)"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/python -m demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check edge converter cloud_sync tests benchmarks demo
	$(VENV)/bin/mypy edge cloud_sync

test-main: $(VENV)/.installed $(TEST_MAIN_DEPS)
	$(VENV)/bin/python -m pytest tests -q

# The device-side tests again without TensorFlow; test models are built once by the full environment.
test-edge: $(VENV_EDGE)/.installed $(VENV)/.installed
	EDGE_TF_PYTHON=$(ROOT)/$(VENV)/bin/python $(VENV_EDGE)/bin/python -m pytest tests/edge -q -p no:cacheprovider

test-legacy: $(VENV_LEGACY)/.installed $(VENV)/.installed
	EDGE_TF_PYTHON=$(ROOT)/$(VENV)/bin/python EDGE_BACKEND=tflite-runtime \
	  $(VENV_LEGACY)/bin/python -m pytest tests/edge -q -p no:cacheprovider

test: lint test-main test-edge test-legacy

bench: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks

clean:
	rm -rf $(VENV) $(VENV_EDGE) $(VENV_LEGACY) .cache build *.egg-info demo-out
