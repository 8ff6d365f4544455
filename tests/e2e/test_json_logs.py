"""`LLAMADOCK_LOG_FORMAT=json` on the real stack: every line the gateway and the orchestrator
write, the copied model lines and the activity line included, is one JSON object."""

from __future__ import annotations

import json

import httpx
import pytest

from contract.activity import ActivityRecord
from support.stack import require_docker, running_stack
from support.waiting import wait_until

require_docker()
pytestmark = pytest.mark.docker


def test_every_line_is_one_json_object(tmp_path, tiny_models):
    with running_stack(tmp_path, tiny_models["tiny-a"], as_file="tiny.gguf",
                       add={"name": "tiny", "model": "tiny.gguf"}, env={"LLAMADOCK_LOG_FORMAT": "json"}) as stack:
        body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
        assert httpx.post(stack.url + "/v1/chat/completions", json=body, timeout=60).status_code == 200

        def logged() -> list[dict]:
            out = stack.compose("logs", "--no-color", "--no-log-prefix", "gateway", "orchestrator").stdout
            return [json.loads(line) for line in out.splitlines() if line.strip()]  # raises on a plain line

        lines = wait_until(lambda: (found := logged()) and any(o["logger"] == "llamadock.activity" for o in found)
                           and found, 30, "the activity line", every=0.5)
        assert all({"time", "level", "logger", "message"} <= set(o) for o in lines)
        (activity,) = [ActivityRecord.model_validate(o["activity"]) for o in lines
                       if o["logger"] == "llamadock.activity"]
        assert (activity.model, activity.status, activity.tokens_out) == ("tiny", 200, 4)
        assert any(o["logger"] == "llamadock.model" and o["model"] == "tiny" for o in lines)  # its load, copied
