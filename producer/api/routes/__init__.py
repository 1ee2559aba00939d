"""The API's routes, one module per resource: jobs, batches, uploads, and ops (health, metrics).

Routes are plain functions: FastAPI runs them in its thread pool, so the blocking Redis client
never stalls the event loop. Each takes what it needs from :mod:`producer.api.deps`.
"""
