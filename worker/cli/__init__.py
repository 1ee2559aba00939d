"""The worker's commands, which ``stylequeue`` finds through the ``stylequeue.commands`` entry points.

``stylize`` and ``samples`` (:mod:`worker.cli.stylize`), ``worker`` and ``health``
(:mod:`worker.cli.operate`), ``dev`` (:mod:`worker.cli.dev`). Each module imports TensorFlow only
when its command runs.
"""
