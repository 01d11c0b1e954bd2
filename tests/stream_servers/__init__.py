"""Real stream servers for tests: rtsp_server.py runs under Debian's /usr/bin/python3 (tests/streams.py)."""
