"""Every Lua script stylequeue runs in Redis: one ``.lua`` file each, read once, sent by SHA.

The scripts live in the ``lua/`` folder of the package that owns the structure they change
(``producer/broker/lua/``, ``worker/runtime/lua/``); each file starts with the keys and arguments
it takes. :func:`load` reads a file once per process; a call sends ``EVALSHA`` and, when the
server does not know the script yet (a new or restarted Redis), loads it with ``SCRIPT LOAD``
and sends it again. Inside a pipeline redis-py loads missing scripts before the pipeline runs.
"""

from __future__ import annotations

import functools
from importlib.resources import files
from typing import Any


class LuaScript:
    """One script; call it as ``script(client, numkeys, *keys_and_args)``, like ``EVAL``.

    Args:
        name: The file's name without ``.lua``.
        source: The script.
    """

    def __init__(self, name: str, source: bytes) -> None:
        from redis.commands.core import Script

        self.name = name
        self.source = source
        self._script = Script(None, source)  # type: ignore[arg-type]  # bytes: no client needed for its SHA

    @property
    def sha(self) -> str:
        """The script's SHA-1, as Redis names it."""
        return str(self._script.sha)

    def __call__(self, client: Any, numkeys: int, *keys_and_args: Any) -> Any:
        """Run it on ``client`` (a Redis client or a pipeline) with ``numkeys`` keys first."""
        return self._script(keys=keys_and_args[:numkeys], args=keys_and_args[numkeys:], client=client)

    def __repr__(self) -> str:
        return f"LuaScript({self.name!r})"


@functools.cache
def load(package: str, name: str) -> LuaScript:
    """The script ``<package>/lua/<name>.lua``, read once per process."""
    return LuaScript(name, files(package).joinpath("lua").joinpath(f"{name}.lua").read_bytes())
