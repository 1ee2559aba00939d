"""Every Redis key stylequeue writes, besides Celery's and kombu's, and how long each lives.

All of them live in the **broker's** Redis, next to the messages they describe (the sweep that
recovers abandoned jobs reads both atomically). Every key has a TTL or a cap:

=========================== ====== ======================================= =====================================
key                         type   written by                              bounded by
=========================== ====== ======================================= =====================================
``stylequeue:lease:<job>``  string the run holding the job: ``owner|tag``  ``STYLEQUEUE_LEASE_TTL_S``, renewed
``stylequeue:done:<job>``   string whoever ended the job (``ending.end``,   ``STYLEQUEUE_RESULT_EXPIRES_S``
                                   the only writer): its final state
``stylequeue:runs:<job>``   set    each run start (its owner); a run that  ``STYLEQUEUE_RESULT_EXPIRES_S``
                                   steps aside removes itself; deleted at
                                   the job's end: who remains crashed
``stylequeue:cancel:<job>`` string ``stylequeue cancel``                   ``STYLEQUEUE_RESULT_EXPIRES_S``
``stylequeue:tenth:<job>``  string the worker: tenths of the way announced ``STYLEQUEUE_RESULT_EXPIRES_S``
``stylequeue:jobs``         zset   the client at submit, the worker at     ``STYLEQUEUE_JOBS_INDEX_MAX`` entries,
                                   start (job id → first seen, epoch s)    none older than the result expiry
``stylequeue:dead``         hash   the worker: dead letters                ``STYLEQUEUE_DEAD_LETTERS_MAX``
``stylequeue:dead:index``   zset   (job id → arrival: µs, strictly rising) entries, ``..._DEAD_LETTER_TTL_S``
``stylequeue:sweeper:<q>`` string the worker sweeping queue q this        ``STYLEQUEUE_SWEEP_INTERVAL_S``
                                   interval (one lock per queue)
``stylequeue:claim:<tag>``  string a worker that received a message, until ``STYLEQUEUE_PROC_ALIVE_TIMEOUT_S``
                                   its run takes the lease                 + 60 s
``stylequeue:events``       stream every job's state changes               ``STYLEQUEUE_EVENTS_MAX`` entries
``stylequeue:job:<job>``    hash   the HTTP API: tenant, batch, webhook,   ``STYLEQUEUE_RESULT_EXPIRES_S``
                                   timestamps of an API job
``stylequeue:tenant:<t>:*`` zset   the API: a tenant's jobs, in flight     the result expiry, and capped
``stylequeue:batch:<b>``    hash   the API: a batch and its counts         ``STYLEQUEUE_RESULT_EXPIRES_S``
``stylequeue:batch:<b>:jobs`` zset the API: a batch's jobs                 ``STYLEQUEUE_RESULT_EXPIRES_S``
``stylequeue:idem:<t>:<k>`` string the API: a request queueing this job   60 s (then the job's record
                                   id (two concurrent ones kept apart)     answers retries)
``stylequeue:rate:<t>``     hash   the API: a tenant's rate-limit bucket   a minute idle
``stylequeue:webhooks``     hash   the notifier: deliveries made, failed   counters (two fields)
``stylequeue:webhooks:due`` zset   the notifier: event id → next attempt   one per event being delivered;
                                   (epoch s), or a claim's expiry          removed when it ends
``stylequeue:webhooks:pending`` hash the notifier: event id → delivery     the same events
                                   and attempts made
``stylequeue:webhooks:claims`` hash the notifier: event id → the claim     the same events
                                   token of its attempt under way
``stylequeue:webhook:done:<e>`` string the notifier: the event ended       ``STYLEQUEUE_WEBHOOK_RETRY_FOR_S``
                                   (a late copy of it starts nothing)      + 1 hour
``stylequeue:durable``      string any writer that waits for replicas       a minute
                                   (Redis ``WAIT``): a write of its own that
                                   the replicas confirm
``stylequeue:sent:<uuid>``  string the client, per batch sent: whether a   5 minutes
                                   batch whose reply was lost went through
=========================== ====== ======================================= =====================================

Celery keeps ``celery-task-meta-<job>`` (state, progress, result) for ``STYLEQUEUE_RESULT_EXPIRES_S``
in the result backend; kombu keeps the queue lists (see :mod:`producer.broker.queues`), ``unacked`` /
``unacked_index`` (messages taken by a worker, removed at the ack) and ``_kombu.binding.*``.
"""

from __future__ import annotations

LEASE = "stylequeue:lease:{}"
DONE = "stylequeue:done:{}"
RUNS = "stylequeue:runs:{}"
CANCEL = "stylequeue:cancel:{}"
PROGRESS = "stylequeue:tenth:{}"
JOBS = "stylequeue:jobs"
DEAD = "stylequeue:dead"
DEAD_INDEX = "stylequeue:dead:index"
SWEEPER = "stylequeue:sweeper:{}"

#: Every job's state changes, capped (see producer.broker.events).
EVENTS = "stylequeue:events"
#: A job submitted through the HTTP API: tenant, batch, webhook, timestamps (hash).
JOB = "stylequeue:job:{}"
#: A tenant's recent jobs (zset: job id → created at) and those not ended yet (zset).
TENANT_JOBS = "stylequeue:tenant:{}:jobs"
TENANT_INFLIGHT = "stylequeue:tenant:{}:inflight"
#: An API batch: tenant, total, webhook, counts by final state (hash), and its jobs (zset).
BATCH = "stylequeue:batch:{}"
BATCH_JOBS = "stylequeue:batch:{}:jobs"
#: An Idempotency-Key of a tenant → the job it created.
IDEMPOTENCY = "stylequeue:idem:{}:{}"
#: A tenant's rate-limit bucket (hash: tokens, at).
RATE = "stylequeue:rate:{}"
#: Webhook deliveries: counters ``delivered``, ``failed`` (hash).
WEBHOOKS = "stylequeue:webhooks"
WEBHOOKS_DUE = "stylequeue:webhooks:due"
WEBHOOKS_PENDING = "stylequeue:webhooks:pending"
WEBHOOKS_CLAIMS = "stylequeue:webhooks:claims"
WEBHOOK_DONE = "stylequeue:webhook:done:{}"
CLAIM = "stylequeue:claim:{}"
SENT = "stylequeue:sent:{}"
#: A write of its own that a client waiting for replicas sends before ``WAIT`` (see broker.replicated).
DURABLE = "stylequeue:durable"

#: Celery's result key of a job (result backend).
CELERY_META = "celery-task-meta-{}"
#: kombu's Redis transport: messages taken by a worker and not acknowledged, and when.
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
