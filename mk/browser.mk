# Headless Chromium for the dashboard's browser tests (tests/e2e/test_dashboard.py): Debian's chromium and
# chromium-driver (/usr/bin/chromium, /usr/bin/chromedriver), driven by Selenium (the dev extra).
# Installed only when missing, and only as root; otherwise a one-line error naming the command to run.
.PHONY: browser-deps
TEST_MAIN_DEPS += browser-deps

browser-deps:
	@missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	test -x /usr/bin/chromedriver || missing="$$missing chromium-driver"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "error: missing Debian packages for the dashboard tests:$$missing; run: sudo apt-get install$$missing" >&2; exit 2; \
	  fi; \
	fi
