"""Every Redis key stylequeue writes, besides Celery's and kombu's, and how long each lives.

All of them live in the **broker's** Redis, next to the messages they describe (the sweep that
recovers abandoned jobs reads both atomically). Every key has a TTL or a cap:

=========================== ====== ======================================= =====================================
key                         type   written by                              bounded by
=========================== ====== ======================================= =====================================
``stylequeue:lease:<job>``  string the run holding the job: ``owner|tag``  ``STYLEQUEUE_LEASE_TTL_S``, renewed
``stylequeue:done:<job>``   string the run that ended the job: final state ``STYLEQUEUE_RESULT_EXPIRES_S``
``stylequeue:runs:<job>``   int    each run start; deleted at the job's end ``STYLEQUEUE_RESULT_EXPIRES_S``
``stylequeue:cancel:<job>`` string ``stylequeue cancel``                   ``STYLEQUEUE_RESULT_EXPIRES_S``
``stylequeue:jobs``         zset   the client at submit, the worker at     ``STYLEQUEUE_JOBS_INDEX_MAX`` entries,
                                   start (job id → first seen, epoch s)    none older than the result expiry
``stylequeue:dead``         hash   the worker: dead letters                ``STYLEQUEUE_DEAD_LETTERS_MAX``
``stylequeue:dead:index``   zset   (job id → failed at)                    entries, ``..._DEAD_LETTER_TTL_S``
``stylequeue:sweeper``      string the worker sweeping this interval       ``STYLEQUEUE_SWEEP_INTERVAL_S``
``stylequeue:claim:<tag>``  string a worker that received a message, until ``STYLEQUEUE_PROC_ALIVE_TIMEOUT_S``
                                   its run takes the lease                 + 60 s
``stylequeue:batch:<uuid>`` string the client, per batch sent: whether a   5 minutes
                                   batch whose reply was lost went through
=========================== ====== ======================================= =====================================

Celery keeps ``celery-task-meta-<job>`` (state, progress, result) for ``STYLEQUEUE_RESULT_EXPIRES_S``
in the result backend; kombu keeps the queue lists (see :mod:`producer.queues`), ``unacked`` /
``unacked_index`` (messages taken by a worker, removed at the ack) and ``_kombu.binding.*``.
"""

from __future__ import annotations

LEASE = "stylequeue:lease:{}"
DONE = "stylequeue:done:{}"
RUNS = "stylequeue:runs:{}"
CANCEL = "stylequeue:cancel:{}"
JOBS = "stylequeue:jobs"
DEAD = "stylequeue:dead"
DEAD_INDEX = "stylequeue:dead:index"
SWEEPER = "stylequeue:sweeper"
CLAIM = "stylequeue:claim:{}"
BATCH = "stylequeue:batch:{}"

#: Celery's result key of a job (result backend).
CELERY_META = "celery-task-meta-{}"
#: kombu's Redis transport: messages taken by a worker and not acknowledged, and when.
UNACKED = "unacked"
UNACKED_INDEX = "unacked_index"
