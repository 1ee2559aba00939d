"""Moved to :mod:`producer.core.errors`; this module keeps the imports of earlier releases working."""

from producer.core.errors import *  # noqa: F403
