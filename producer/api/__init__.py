"""The HTTP API (``stylequeue api``), a light process that never imports TensorFlow.

:mod:`producer.api.app` builds the app; :mod:`producer.api.routes` has one module per resource
(jobs, batches, uploads, ops); :mod:`producer.api.deps` what routes depend on;
:mod:`producer.api.submission` validating and queueing jobs; :mod:`producer.api.errors` the
statuses; :mod:`producer.api.resources` the JSON returned; :mod:`producer.api.metrics` its
Prometheus metrics. Keys and tenants are :mod:`producer.tenants`. Needs the ``api`` extra.
"""
