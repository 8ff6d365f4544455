"""A web page on another origin calls the gateway from headless Chromium, as a chat UI on another
port would: with the default LLAMADOCK_CORS_ORIGINS (this machine, any port) it streams a chat
through `fetch`, with an API key and credentials, and reads the tokens as they come; a page from
an origin not allowed is refused by the browser. The model is a real llama-server."""

from __future__ import annotations

import json

import openai
import pytest

from support.browser import Browser, PageServer
from support.gateway import GatewayProcess, write_upstreams

KEY = "browser-key"
# Long enough (a few hundred ms here) that a stream read as it comes arrives in more than one read.
BODY = {"model": "tiny-a", "messages": [{"role": "user", "content": "Hello there"}], "max_tokens": 400,
        "ignore_eos": True, "temperature": 0, "seed": 7, "stream": True}

# Streams the chat, reading the body piece by piece as the page gets it; returns what it saw.
STREAM_CHAT = """
(async () => {
  try {
    const answer = await fetch(%(url)s, {method: "POST", credentials: "include",
      headers: {"content-type": "application/json", "authorization": "Bearer %(key)s"}, body: %(body)s});
    const reader = answer.body.getReader();
    const decoder = new TextDecoder();
    let text = "", reads = 0;
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      reads += 1;
      text += decoder.decode(value, {stream: true});
    }
    const tokens = text.split("\\n").filter(line => line.startsWith("data: {"))
      .map(line => JSON.parse(line.slice(6)).choices[0]?.delta?.content || "").join("");
    return {ok: true, status: answer.status, model: answer.headers.get("x-llamadock-model"), tokens, reads};
  } catch (error) {
    return {ok: false, error: String(error)};
  }
})()
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, upstreams):
    path = write_upstreams(tmp_path_factory.mktemp("cors") / "upstreams.yaml",
                           {"tiny-a": {"url": upstreams["tiny-a"].url}})
    with GatewayProcess(path, api_keys=KEY) as gw:  # the default origins: LLAMADOCK_CORS_ORIGINS unset
        yield gw


@pytest.fixture(scope="module")
def browser():
    with Browser() as chromium:
        yield chromium


@pytest.fixture(scope="module")
def page_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("page")
    (root / "index.html").write_text("<!doctype html><title>a chat UI</title><p>chat</p>")
    return root


def script(gateway) -> str:
    return STREAM_CHAT % {"url": json.dumps(gateway.url + "/v1/chat/completions"), "key": KEY,
                          "body": json.dumps(json.dumps(BODY))}


def test_a_page_on_another_port_streams_a_chat_and_reads_the_tokens(gateway, browser, page_root):
    direct = openai.OpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0)
    request = {k: v for k, v in BODY.items() if k != "ignore_eos"}
    expected = "".join(c.choices[0].delta.content or "" for c in direct.chat.completions.create(
        **request, extra_body={"ignore_eos": True}) if c.choices)
    with PageServer(page_root, "127.0.0.1") as page:
        assert page.origin != gateway.url  # another origin: another port
        seen = browser.evaluate(page.origin + "/index.html", script(gateway))
    assert seen["ok"], seen
    assert seen["status"] == 200 and seen["model"] == "tiny-a"  # an exposed header, readable by the page
    assert seen["tokens"] == expected and len(expected) > 10
    assert seen["reads"] > 1  # read as a stream, in pieces


def test_a_page_from_an_origin_not_allowed_is_refused(gateway, browser, page_root):
    with PageServer(page_root, "127.0.0.2") as page:  # another loopback address: not in the default list
        seen = browser.evaluate(page.origin + "/index.html", script(gateway))
    assert seen == {"ok": False, "error": "TypeError: Failed to fetch"}, seen


def test_that_origin_is_let_in_once_listed(tmp_path, upstreams, browser, page_root):
    """The refusal above is CORS's: listing the origin in LLAMADOCK_CORS_ORIGINS lets the same page in."""
    path = write_upstreams(tmp_path / "upstreams.yaml", {"tiny-a": {"url": upstreams["tiny-a"].url}})
    with PageServer(page_root, "127.0.0.2") as page, \
            GatewayProcess(path, api_keys=KEY, env={"LLAMADOCK_CORS_ORIGINS": page.origin}) as gateway:
        seen = browser.evaluate(page.origin + "/index.html", script(gateway))
    assert seen["ok"] and seen["status"] == 200 and seen["tokens"], seen
