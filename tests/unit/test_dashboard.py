"""The Grafana dashboard (deploy/grafana/stylequeue.json): Grafana's shape, one datasource variable
behind every query, every metric a query names is one the code serves, and every metric the code
serves has a panel.

What the code serves is read from the code: the worker's metrics (the module's own metric objects
plus its queue-depth collector, the registry :func:`worker.signals.metrics.serve` builds), the API's
registry (:class:`producer.api.metrics.ApiMetrics`) and the light exporter's page
(:func:`producer.broker.exporter.render`), each rendered in the text format over an empty broker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "stylequeue.json"
#: Grafana's own variables a query may use.
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms"}
#: PromQL's keywords (lower case), none of them a metric.
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}
_KEYWORDS |= {"inf", "nan"}
_IDENTIFIER = re.compile(r"[a-zA-Z_:][\w:]*")


class EmptyBroker:
    """The few Redis calls the collectors make, answered as an empty broker would."""

    def __init__(self) -> None:
        self.queued = 0

    def pipeline(self, transaction: bool = True) -> EmptyBroker:
        return self

    def llen(self, name: str) -> None:
        self.queued += 1

    def execute(self) -> list[int]:
        n, self.queued = self.queued, 0
        return [0] * n

    def hscan_iter(self, name: str, count: int | None = None) -> Iterator[Any]:
        return iter(())

    def hgetall(self, name: str) -> dict[bytes, bytes]:
        return {}


def metric_names(expr: str) -> set[str]:
    """The metric (series) names a PromQL expression selects.

    Strings, Grafana variables, label matchers, ranges, label lists (``by (...)``, ``on (...)``),
    ``offset``/``@`` modifiers and numbers are dropped; of the identifiers left, those called
    (functions, aggregations) and the keywords are not metrics.
    """
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', " ", expr)
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?:\boffset\b|@)\s*-?[\w.]+", " ", text)
    text = re.sub(r"(?<![\w:])(?:0[xX][0-9a-fA-F]+|\d*\.?\d+(?:[eE][+-]?\d+)?)", " ", text)
    return {
        m.group()
        for m in _IDENTIFIER.finditer(text)
        if m.group().lower() not in _KEYWORDS and not re.match(r"\s*\(", text[m.end() :])
    }


def exposed(page: str) -> dict[str, str]:
    """Every series name a metrics page can carry, mapped to its family.

    A labelled metric has no sample before its first use, so names come from the ``# TYPE`` lines
    too: a counter's ``_total`` and ``_created``; a histogram's ``_bucket``, ``_sum``, ``_count`` and
    ``_created``; a summary's and a gauge's own name.
    """
    suffixes = {"histogram": ("_bucket", "_sum", "_count", "_created"), "summary": ("", "_sum", "_count", "_created")}
    names: dict[str, str] = {}
    for line in page.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            if kind == "counter":
                family = name.removesuffix("_total")
                names |= {family + "_total": family, family + "_created": family}
            else:
                names |= {name + s: name for s in suffixes.get(kind, ("",))}
        elif line.strip() and not line.startswith("#"):
            sample = _IDENTIFIER.match(line)
            assert sample, line
            names.setdefault(sample.group(), sample.group())
    return names


def unknown(expr: str, served: dict[str, str]) -> set[str]:
    """The names ``expr`` selects that no page serves."""
    return metric_names(expr) - served.keys()


def worker_page() -> str:
    """The worker's metrics: its module's metric objects and the queue depth, as its ``serve`` registers them."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics import MetricWrapperBase

    from worker.signals import metrics

    registry = CollectorRegistry()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            registry.register(value)
    registry.register(metrics.QueueDepthCollector(EmptyBroker(), "stylequeue"))
    return bytes(generate_latest(registry)).decode()


@pytest.fixture(scope="module")
def pages() -> dict[str, str]:
    """Each metrics endpoint's page, by who serves it."""
    from producer.api.metrics import ApiMetrics
    from producer.broker import exporter

    return {
        "worker": worker_page(),
        "api": ApiMetrics(EmptyBroker()).render().decode(),
        "exporter": exporter.render(EmptyBroker(), "stylequeue"),
    }


@pytest.fixture(scope="module")
def served(pages: dict[str, str]) -> dict[str, str]:
    names: dict[str, str] = {}
    for page in pages.values():
        names |= exposed(page)
    return names


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows too."""
    found = []
    for panel in dashboard["panels"]:
        found += [panel, *panel.get("panels", [])]
    return found


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every query variable (``label_values(expr, label)``: expr)."""
    found = [
        (f"panel {p['id']} {p['title']!r} {t['refId']}", t["expr"])
        for p in all_panels(dashboard)
        for t in p.get("targets", [])
    ]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            q = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            m = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*\w+\s*\)\s*", q)
            found.append((f"variable {variable['name']}", (m.group(1) or "") if m else q))
    return found


def test_the_checker_rejects_a_name_nobody_serves(served: dict[str, str]) -> None:
    rate = 'sum by (le) (rate(stylequeue_no_such_metric_bucket{queue_name=~"$queue"}[5m]))'
    assert unknown(f"histogram_quantile(0.95, {rate})", served) == {"stylequeue_no_such_metric_bucket"}
    assert unknown("60 * sum(rate(stylequeue_no_such_metric_total[$__rate_interval])) > 0.5", served)
    # A histogram or counter is served under its suffixed names only.
    assert unknown("celery_task_runtime", served) == {"celery_task_runtime"}
    assert unknown("stylequeue_api_requests", served) == {"stylequeue_api_requests"}
    assert not unknown("celery_task_runtime_count + stylequeue_api_requests_total", served)


def test_the_extractor_keeps_metrics_and_drops_the_rest() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, route) (rate(a_bucket{status=~"5..", x="b_total"}[5m:1m])))'
        " / ignoring (pid) group_left () max without (x) (b_total offset 1h) * 1e3 and on(y) c:rule"
        ' or label_replace(d, "dst", "$1", "src", "(.*)") unless vector(0) > bool Inf'
    )
    assert metric_names(expr) == {"a_bucket", "b_total", "c:rule", "d"}


def test_every_query_names_a_metric_the_code_serves(dashboard: dict[str, Any], served: dict[str, str]) -> None:
    found = queries(dashboard)
    assert len(found) > 20
    bad = {where: sorted(unknown(expr, served)) for where, expr in found if unknown(expr, served)}
    assert not bad, bad
    assert all(metric_names(expr) for _, expr in found), "a query that selects no metric"


def test_every_metric_the_code_serves_has_a_panel(dashboard: dict[str, Any], served: dict[str, str]) -> None:
    used = {served.get(name, name) for _, expr in queries(dashboard) for name in metric_names(expr)}
    families = {f for f in served.values() if not f.endswith("_created")}
    assert families - used == set()


def test_workers_serve_the_exporters_queue_gauges(pages: dict[str, str]) -> None:
    """The same definition behind both (and a sign the worker's collector read the fake broker)."""
    gauges = exposed(pages["exporter"])
    assert gauges and gauges.keys() <= exposed(pages["worker"]).keys()


def test_grafana_shape(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["title"], str) and dashboard["title"]
    assert re.fullmatch(r"[\w-]{1,40}", dashboard["uid"])
    assert dashboard.get("id") is None  # Grafana assigns it on import or provisioning
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert isinstance(dashboard["panels"], list) and isinstance(dashboard["templating"]["list"], list)
    assert "__inputs" not in dashboard  # ${DS_...} inputs work for a UI import only, not provisioning
    panels = all_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    for p in panels:
        grid = p["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, p["title"]
        assert p["title"] and p["type"]
        if p["type"] != "row":
            refs = [t["refId"] for t in p["targets"]]
            assert refs and len(refs) == len(set(refs)), p["title"]


def test_every_query_uses_the_datasource_variable(dashboard: dict[str, Any]) -> None:
    variables = dashboard["templating"]["list"]
    (source,) = [v for v in variables if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    reference = {"type": "prometheus", "uid": f"${{{source['name']}}}"}
    for p in all_panels(dashboard):
        if p["type"] != "row":
            assert p["datasource"] == reference, p["title"]
            assert all(t.get("datasource", reference) == reference for t in p["targets"]), p["title"]
    assert all(v["datasource"] == reference for v in variables if v["type"] == "query")
    defined = {v["name"] for v in variables} | BUILTIN_VARIABLES
    used = {m for _, expr in queries(dashboard) for m in re.findall(r"\$\{?(\w+)", expr)}
    assert used and used <= defined, used - defined
