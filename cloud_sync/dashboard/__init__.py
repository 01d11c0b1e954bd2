"""The collector's HTTP side: a live fleet dashboard and Prometheus ``/metrics`` (see docs/dashboard.md).

``live.LiveFleet`` keeps what the devices say over MQTT (status, telemetry, update state, sources, replies,
events); ``app.build_app`` serves it with what the store holds (Starlette, server-sent events);
``server.DashboardServer`` runs it under uvicorn in a thread. Starlette and uvicorn are the ``dashboard``
extra: ``pip install 'edge-runtime[dashboard]'``; they are imported only when ``--http`` is used.
"""
