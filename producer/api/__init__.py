"""The HTTP API (``stylequeue api``), a light process that never imports TensorFlow.

:mod:`producer.api.app` has the routes, :mod:`producer.api.resources` the JSON they return,
:mod:`producer.api.tenants` the keys and their limits, :mod:`producer.api.metrics` its Prometheus
metrics. Needs the ``api`` extra (FastAPI, uvicorn).
"""
