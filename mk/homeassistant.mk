# make test-ha: tests/homeassistant against a real Home Assistant (docs/homeassistant.md).
#
# Each release gets its own virtual environment, cached outside the repository and keyed by version
# ($XDG_CACHE_HOME or ~/.cache, then edge-ci/homeassistant-<version>), so only the first run installs it
# (about 2 minutes; then the tests take well under one). A missing or half-made environment (no .installed
# stamp) is made again from scratch. tests/homeassistant/provision.py installs the integrations' own
# requirements ahead of time, because the tests run Home Assistant with --skip-pip.
#   2024.3.3 on Python 3.11 (the last release that runs on it; josepy 2 broke its acme import);
#   2025.4.4 on Python 3.13 when one is found (python3.13 on PATH or pyenv's), else that run is left out.

HA_CACHE := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edge-ci
HA_OLD := 2024.3.3
HA_NEW := 2025.4.4
HA_PYTHON_$(HA_OLD) := $(PYTHON)
HA_PINS_$(HA_OLD) := 'josepy<2'
# (a pyenv shim named python3.13 exists even when it cannot run: each candidate is tried)
HA_PYTHON_$(HA_NEW) ?= $(shell for c in $$(command -v python3.13) $(HOME)/.pyenv/versions/3.13*/bin/python3; do \
  "$$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null && { echo "$$c"; break; }; done)
HA_PINS_$(HA_NEW) :=
HA_VERSIONS := $(HA_OLD) $(if $(HA_PYTHON_$(HA_NEW)),$(HA_NEW))
HA_TESTS := $(VENV)/bin/python -m pytest tests/homeassistant -q -p no:cacheprovider

.PHONY: test-ha

$(HA_CACHE)/homeassistant-%/.installed:
	@test -n "$(HA_PYTHON_$*)" || { echo "error: no Python for Home Assistant $*; see mk/homeassistant.mk" >&2; exit 2; }
	rm -rf $(@D)
	$(HA_PYTHON_$*) -m venv $(@D)
	$(@D)/bin/pip install $(PIP_FLAGS) --upgrade pip
	$(@D)/bin/pip install $(PIP_FLAGS) homeassistant==$* $(HA_PINS_$*)
	$(@D)/bin/python tests/homeassistant/provision.py
	touch $@

test-ha: $(VENV)/.installed $(foreach v,$(HA_VERSIONS),$(HA_CACHE)/homeassistant-$(v)/.installed)
	@test -n "$(HA_PYTHON_$(HA_NEW))" || echo "note: no Python 3.13 found: Home Assistant $(HA_NEW) is not tested"
	@set -e; for v in $(HA_VERSIONS); do \
	  echo "Home Assistant $$v"; \
	  EDGE_HA_PYTHON=$(HA_CACHE)/homeassistant-$$v/bin/python $(HA_TESTS); \
	done
