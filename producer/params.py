"""Moved to :mod:`producer.core.params`; this module keeps the imports of earlier releases working."""

from producer.core.params import *  # noqa: F403
