"""Moved to :mod:`producer.core.settings`; this module keeps the imports of earlier releases working."""

from producer.core.settings import *  # noqa: F403
