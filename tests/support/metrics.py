"""Reading Prometheus metrics from a real ``/metrics`` endpoint."""

from __future__ import annotations

import urllib.request


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return str(r.read().decode())


def sample(text: str, metric: str, **labels: str) -> float:
    """The value of a series (the largest, when several processes report it)."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(metric + "{") or line.startswith(metric + " ")
        if all(f'{k}="{v}"' in line for k, v in labels.items())
    ]
    if values:
        return max(values)
    raise AssertionError(f"{metric} {labels} not in metrics:\n{text[:3000]}")
