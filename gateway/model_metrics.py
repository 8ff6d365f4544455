"""Each running model's own llama-server metrics, served on the gateway's /metrics.

One Prometheus target then shows every model's figures (tokens per second, requests
processing and deferred, …) with a ``model`` label, instead of one target per container
that comes and goes with the model. The pure part parses each model's exposition text
with prometheus-client's parser, adds the label and merges the families (a family may
appear once in a scrape); the effect fetches every ready model at once, each within a
short timeout, so a model that hangs costs the scrape that timeout and no more.

Also here: what an eviction is called in ``llamadock_evictions_total``: a small fixed set of
labels, read from the kind of the scheduler's ``Stop`` (its reason is a sentence for people).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Iterable, Mapping

import httpx
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from contract.listing import ModelState, ModelStatus

from .scheduling.scheduler import StopKind

MODEL_LABEL = "model"
SCRAPE_TIMEOUT_S = 0.5  # per model; they are fetched at once, so this bounds the whole scrape's wait

EVICTION_REASONS = ("ttl", "room", "swap_group", "admin", "crash", "other")
EVICTION_LABELS = {StopKind.IDLE: "ttl", StopKind.ROOM: "room", StopKind.SWAP_GROUP: "swap_group",
                   StopKind.UNLOAD: "admin", StopKind.KEEP_ALIVE: "admin"}


# ---- pure ------------------------------------------------------------------------------------------

def eviction_reason(kind: StopKind) -> str:
    """The label for a scheduler ``Stop`` of this kind ("other" for a kind without a label of its own)."""
    return EVICTION_LABELS.get(kind, "other")


def crashed(before: Mapping[str, str], models: Iterable[ModelStatus]) -> list[str]:
    """Models that were ready (``before``: name -> scheduler phase) and that the orchestrator's
    listing now shows stopped or failed: they went away on their own. One we stopped is
    ``stopping`` or further by then, never ``ready``."""
    return [m.name for m in models
            if before.get(m.name) == "ready" and m.state in (ModelState.STOPPED, ModelState.FAILED)]


def parse(text: str) -> list[Metric]:
    """One llama-server's /metrics. Raises ValueError when it is not the exposition format.

    prometheus-client's parser names counters the OpenMetrics way: a counter whose sample
    lacks ``_total`` gets it (llama.cpp's ``llamacpp:n_tokens_max`` is served as
    ``llamacpp:n_tokens_max_total``)."""
    try:
        return list(text_string_to_metric_families(text))
    except (ValueError, IndexError, KeyError) as exc:
        raise ValueError(f"not Prometheus text: {exc}") from None


def relabel(per_model: Mapping[str, list[Metric]]) -> list[Metric]:
    """The families of every model merged by name, each sample labelled with its model.

    A label ``model`` the server set itself is kept as ``exported_model`` (Prometheus does
    the same when a target's label clashes with one it adds). A family whose type differs
    from the first model's under the same name is left out for that model: one family
    cannot have two types."""
    merged: dict[str, Metric] = {}
    for model in sorted(per_model):
        for family in per_model[model]:
            into = merged.get(family.name)
            if into is None:
                into = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
            elif into.type != family.type:
                continue
            for sample in family.samples:
                labels = dict(sample.labels)
                if MODEL_LABEL in labels:
                    labels["exported_" + MODEL_LABEL] = labels.pop(MODEL_LABEL)
                into.samples.append(Sample(sample.name, {MODEL_LABEL: model, **labels}, sample.value,
                                           sample.timestamp, sample.exemplar))
    return list(merged.values())


@dataclass(frozen=True)
class Families:
    """What ``prometheus_client.generate_latest`` takes: something with ``collect()``."""
    families: list[Metric]

    def collect(self) -> list[Metric]:
        return self.families


# ---- effect ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Scrape:
    families: list[Metric]  # every model's, relabelled and merged
    errors: dict[str, str]  # model -> why it is missing: timeout, unreachable, http_<status>, unparsable


async def _fetch(client: httpx.AsyncClient, url: str, timeout_s: float) -> list[Metric]:
    # wait_for bounds the whole exchange (httpx's timeouts are per phase: a server that
    # trickles bytes would pass each of them).
    response = await asyncio.wait_for(client.get(f"{url}/metrics", timeout=timeout_s), timeout_s)
    if response.status_code != 200:
        raise _Failed(f"http_{response.status_code}")
    return parse(response.text)


class _Failed(Exception):
    pass


async def scrape(urls: Mapping[str, str], timeout_s: float = SCRAPE_TIMEOUT_S,
                 client: httpx.AsyncClient | None = None) -> Scrape:
    """Every model's /metrics at once (``urls``: model -> its server's base URL)."""
    own = client is None
    # No keep-alive: a model's server may be gone by the next scrape.
    client = client or httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))
    try:
        names = list(urls)
        results = await asyncio.gather(*(_fetch(client, urls[n], timeout_s) for n in names), return_exceptions=True)
    finally:
        if own:
            await client.aclose()
    parsed, errors = {}, {}
    for name, result in zip(names, results):
        if isinstance(result, list):
            parsed[name] = result
        elif isinstance(result, (asyncio.TimeoutError, httpx.TimeoutException)):
            errors[name] = "timeout"
        elif isinstance(result, httpx.HTTPError):
            errors[name] = "unreachable"
        elif isinstance(result, _Failed):
            errors[name] = str(result)
        elif isinstance(result, ValueError):
            errors[name] = "unparsable"
        else:
            raise result
    return Scrape(relabel(parsed), errors)
