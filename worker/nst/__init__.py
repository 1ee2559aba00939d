"""The style-transfer algorithm: Gatys et al. with VGG19 and L-BFGS, and nothing else.

It knows nothing of files, queues, stores or Celery (it imports none of them): it takes decoded
RGB arrays and :class:`producer.core.params.Params` and returns images, reporting progress to a
callback. The job system (:mod:`worker`) and the CLI wrap it.
"""
