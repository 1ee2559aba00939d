"""The Lua scripts: each a .lua file, every one valid Lua to a real redis-server, sent by SHA and
loaded again after the server forgot it (a restart, a failover, ``SCRIPT FLUSH``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from producer.broker import scripts

ROOT = Path(__file__).resolve().parents[2]
LUA = sorted([*ROOT.glob("producer/**/lua/*.lua"), *ROOT.glob("worker/**/lua/*.lua")])


def test_every_script_file_is_valid_lua_to_redis(fresh_redis: Any) -> None:
    assert len(LUA) >= 14
    for path in LUA:
        package = ".".join(path.parent.parent.relative_to(ROOT).parts)
        script = scripts.load(package, path.stem)
        assert fresh_redis.script_load(script.source) == script.sha, path  # compiles: SCRIPT LOAD checks syntax
        assert path.read_text().startswith("-- "), f"{path}: say what it takes in its first lines"


def test_no_module_sends_inline_lua() -> None:
    sources = [*ROOT.glob("producer/**/*.py"), *ROOT.glob("worker/**/*.py")]
    offenders = [str(p) for p in sources if re.search(r"\.eval\(|redis\.call\(", p.read_text())]
    assert not offenders, offenders


def test_a_script_the_server_forgot_is_loaded_again(fresh_redis: Any) -> None:
    renew = scripts.load("worker.runtime", "lease_renew")
    fresh_redis.set("lease", "me", px=10_000)
    assert renew(fresh_redis, 1, "lease", "me", 20_000) == 1
    fresh_redis.script_flush()
    assert renew(fresh_redis, 1, "lease", "someone-else", 20_000) == 0
    pipe = fresh_redis.pipeline()
    renew(pipe, 1, "lease", "me", 30_000)
    fresh_redis.script_flush()  # gone again before the pipeline runs: redis-py loads it first
    assert pipe.execute() == [1] and 20_000 < fresh_redis.pttl("lease") <= 30_000
