"""Prometheus metrics for /metrics.

Updated once per request (never per streamed chunk) so they cost nothing on the
hot path: the proxy counts events itself and reports the totals at the end.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llamadock_requests", "Requests answered, by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"], registry=r)
        self.errors = Counter(
            "llamadock_request_errors", "Requests that failed, by model and kind of failure.",
            ["model", "kind"], registry=r)
        self.latency = Histogram(
            "llamadock_request_duration_seconds", "Time from request to the end of the response.",
            ["model", "endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram(
            "llamadock_time_to_first_token_seconds",
            "Streaming requests: time from request to the first streamed event.",
            ["model"], buckets=_TTFT_BUCKETS, registry=r)
        self.streamed_tokens = Counter(
            "llamadock_streamed_tokens",
            "SSE events streamed to clients, excluding the final [DONE]: llama-server sends one per token.",
            ["model"], registry=r)
        self.in_flight = Gauge(
            "llamadock_in_flight_requests", "Requests being answered now, by model.", ["model"], registry=r)

        self.queue_depth = Gauge(
            "llamadock_queue_depth", "Requests waiting for a model (its slots busy, or it is starting).",
            ["model"], registry=r)
        self.queue_wait = Histogram(
            "llamadock_queue_wait_seconds", "Time a request waited before it was let through or refused.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r)
        self.rejected = Counter(
            "llamadock_rejected_requests", "Requests the scheduler refused: 429 queue full, 503 cannot start or "
            "waited too long, by model and status.", ["model", "status"], registry=r)
        self.model_starts = Histogram(
            "llamadock_model_start_seconds", "On-demand starts: from asking the orchestrator to the model ready.",
            ["model"], buckets=_LATENCY_BUCKETS, registry=r)

        # What the scheduler did to each model (counted where its Stop actions are carried out).
        self.swaps = Counter(
            "llamadock_swaps", "Models stopped so that another could start (to make room, or by a swap group).",
            ["model"], registry=r)
        self.evictions = Counter(
            "llamadock_evictions", "Models stopped, by reason: ttl, room, swap_group, admin, crash, other.",
            ["model", "reason"], registry=r)
        # Conversations' KV caches kept across stops (gateway/kvcache/).
        self.kv_saves = Counter(
            "llamadock_kv_cache_saves", "Slots saved before a planned stop, by model.", ["model"], registry=r)
        self.kv_saved_bytes = Counter(
            "llamadock_kv_cache_saved_bytes", "Bytes of the slots saved, by model.", ["model"], registry=r)
        self.kv_save_failures = Counter(
            "llamadock_kv_cache_save_failures", "Slots not saved before a stop, by why: timeout (the bound), "
            "no_room (cap or disk floor), error.", ["model", "reason"], registry=r)
        self.kv_lookups = Counter(
            "llamadock_kv_cache_lookups", "Requests compared with the saved conversations of their model, by result: "
            "restored (a hit: served after its conversation was restored), skipped (a shared prefix, but "
            "processing it was faster, or no slot free), miss (nothing shared), failed (the file or the restore "
            "failed: served without).", ["model", "result"], registry=r)
        self.kv_restored_bytes = Counter(
            "llamadock_kv_cache_restored_bytes", "Bytes of the slots restored, by model.", ["model"], registry=r)
        self.kv_restored_tokens = Counter(
            "llamadock_kv_cache_restored_tokens", "Prompt tokens the restores spared the model processing.",
            ["model"], registry=r)
        self.model_scrape_errors = Counter(
            "llamadock_model_scrape_errors", "A model's own /metrics missing from a scrape of /metrics, by why: "
            "timeout, unreachable, http_<status>, unparsable.", ["model", "reason"], registry=r)

    def observe(self, model: str, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(model, endpoint, str(status)).inc()
        self.latency.labels(model, endpoint).observe(seconds)

    def error(self, model: str, kind: str) -> None:
        self.errors.labels(model, kind).inc()
