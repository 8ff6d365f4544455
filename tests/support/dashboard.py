"""docs/grafana-llamadock.json: which metric names its queries use, and whether a scrape serves them."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-llamadock.json"
METRIC_NAME = re.compile(r"\b(llamadock_[a-zA-Z0-9_]+|llamacpp:[a-zA-Z0-9_:]+)")


def load() -> dict:
    return json.loads(DASHBOARD.read_text())


def metric_names(dashboard: dict) -> set[str]:
    """Every llamadock_ and llamacpp: name in its panels' queries and its variables."""
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if isinstance(v.get("query"), dict)]
    return {name for e in exprs for name in METRIC_NAME.findall(e)}


def served_names(text: str) -> set[str]:
    """Every sample name an exposition text can hold, from its TYPE lines (a family may have no samples yet)."""
    names = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def names_missing_from(text: str) -> set[str]:
    """What the dashboard queries that this /metrics text does not serve."""
    return metric_names(load()) - served_names(text)
