"""The web console (/ui) in headless Chromium, against a real gateway in front of a real
llama-server: it loads with no errors and asks nothing of another host; a model's state change
shows without a reload; admin actions need the token and a wrong one is refused; the activity
record shows live; a chat streams in the playground and stops on Stop; a model named like markup
is shown as text. Screenshots of each view, light and dark, go to logs/console/ (the README's
docs/console.png is one of them)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from support.browser import Browser
from support.gateway import GatewayProcess, write_upstreams
from support.net import free_port

TOKEN = "console-admin-token"
ODD = '<img src=x onerror="window.__pwned=1">'  # a static upstream name: free text, shown as text
SHOTS = Path(__file__).resolve().parents[2] / "logs" / "console"


def models(upstreams, late_url: str) -> dict:
    return {"tiny-a": {"url": upstreams["tiny-a"].url, "aliases": ["<b>alias</b>"]},
            ODD: {"url": upstreams["tiny-b"].url},
            "late": {"url": late_url}}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, upstreams):
    path = write_upstreams(tmp_path_factory.mktemp("console") / "upstreams.yaml",
                           models(upstreams, f"http://127.0.0.1:{free_port()}"))  # nothing there yet
    with GatewayProcess(path, env={"LLAMADOCK_ADMIN_TOKEN": TOKEN}) as gw:
        yield gw


@pytest.fixture(scope="module")
def browser():
    with Browser() as chromium:
        yield chromium


def ui(gateway) -> str:
    return gateway.url + "/ui"


def state_of(model: str) -> str:
    return f"document.querySelector('tr[data-model={json.dumps(json.dumps(model))[1:-1]}] td:nth-child(2)')?.textContent"


def set_token(tab, token: str) -> None:
    tab.evaluate(f"document.getElementById('token').value = {json.dumps(token)};"
                 "document.getElementById('token-save').click()")


def test_the_page_loads_with_no_errors_and_asks_only_its_own_gateway(gateway, browser):
    for dark in (False, True):
        with browser.tab(ui(gateway), dark=dark) as tab:
            tab.wait_for("document.querySelectorAll('#models tr').length === 3")
            tab.wait_for(f"({state_of('tiny-a')} || '').startsWith('ready')")
            assert tab.evaluate("document.getElementById('conn').textContent") == "live"
            tab.screenshot(SHOTS / f"models-{'dark' if dark else 'light'}.png")
            tab.evaluate("document.querySelector('.tab[data-view=gpu]').click()")
            tab.wait_for("!document.getElementById('view-gpu').hidden && document.querySelector('#pools > *') !== null")
            tab.screenshot(SHOTS / f"memory-{'dark' if dark else 'light'}.png")
            assert tab.errors == []
            fetched = [url for url in tab.requests if not url.startswith("data:")]  # the empty favicon
            assert fetched and all(url.startswith(gateway.url + "/") for url in fetched), tab.requests
            assert any(url.endswith("/status") for url in tab.requests)


def test_a_name_like_markup_is_shown_as_text(gateway, browser):
    with browser.tab(ui(gateway)) as tab:
        tab.wait_for("document.querySelectorAll('#models tr').length === 3")
        names = tab.evaluate("[...document.querySelectorAll('#models strong')].map(n => n.textContent)")
        assert ODD in names
        assert tab.evaluate("document.querySelector('main img, main b') === null")  # no element from a name
        assert "<b>alias</b>" in tab.evaluate("document.getElementById('models').textContent")
        assert tab.evaluate("window.__pwned === undefined")


def test_a_state_change_shows_without_a_reload(gateway, browser, upstreams):
    with browser.tab(ui(gateway)) as tab:
        tab.wait_for(f"({state_of('late')} || '').startsWith('stopped')")
        tab.evaluate("window.__sameDocument = true")
        write_upstreams(gateway.upstreams_file, models(upstreams, upstreams["tiny-a"].url))  # now it answers
        tab.wait_for(f"({state_of('late')} || '').startsWith('ready')", timeout=30)
        assert tab.evaluate("window.__sameDocument === true")  # the same page, not a reload
        assert tab.errors == []


def test_admin_actions_need_the_token_and_a_wrong_one_changes_nothing(gateway, browser):
    unload = "document.querySelector('tr[data-model=\"tiny-a\"] button.unload')"
    with browser.tab(ui(gateway)) as tab:
        tab.wait_for(f"{unload} !== null")
        assert tab.evaluate(f"{unload}.disabled")  # read-only without the token
        set_token(tab, "not-the-token")
        tab.wait_for("document.getElementById('token-state').textContent.includes('wrong admin token')")
        assert tab.evaluate("sessionStorage.length") == 0 and tab.evaluate(f"{unload}.disabled")
        set_token(tab, TOKEN)
        tab.wait_for("document.getElementById('token-state').textContent === 'admin'")
        tab.wait_for(f"!{unload}.disabled")
        assert TOKEN not in tab.evaluate("location.href")  # kept in sessionStorage, never in a URL
        tab.evaluate(f"{unload}.click()")
        # This gateway has no orchestrator: the call went with the token and it says why it cannot.
        tab.wait_for("document.getElementById('notice').textContent.includes('No orchestrator is configured')")
        assert tab.evaluate("document.getElementById('token-state').textContent") == "admin"
        # The only errors: Chromium's own lines for the refused token (401) and the 503 above.
        assert all("Failed to load resource" in e and ("401" in e or "503" in e) for e in tab.errors), tab.errors
        assert all(TOKEN not in url for url in tab.requests)


def test_activity_shows_requests_live_and_filters_by_model(gateway, browser):
    with browser.tab(ui(gateway)) as tab:
        set_token(tab, TOKEN)
        tab.wait_for("document.getElementById('token-state').textContent === 'admin'")
        tab.evaluate("document.querySelector('.tab[data-view=activity]').click()")
        for _ in range(2):
            httpx.post(gateway.url + "/v1/chat/completions", timeout=30, json={
                "model": "tiny-a", "max_tokens": 8, "messages": [{"role": "user", "content": "Hi"}]}).raise_for_status()
        tab.wait_for("[...document.querySelectorAll('#activity tr td:nth-child(2)')].some(td => td.textContent === 'tiny-a')")
        # The tokens/s chart: one line per model, a point per request the server timed.
        points = tab.wait_for("document.querySelector('#speed figure[data-model=\"tiny-a\"] polyline')"
                              "?.getAttribute('points').split(' ').length >= 2 && "
                              "document.querySelector('#speed figure[data-model=\"tiny-a\"] polyline').getAttribute('points')")
        assert all(0 <= float(y) <= 48 for y in (p.split(",")[1] for p in points.split()))
        tab.screenshot(SHOTS / "activity-light.png")
        tab.evaluate("const s = document.getElementById('activity-model'); s.value = 'late';"
                     "s.dispatchEvent(new Event('change'))")
        tab.wait_for("document.querySelectorAll('#activity tr').length === 0")


def test_a_chat_streams_in_the_playground_and_stop_stops_it(gateway, browser):
    with browser.tab(ui(gateway)) as tab:
        tab.evaluate("document.querySelector('.tab[data-view=playground]').click()")
        tab.wait_for("[...document.getElementById('chat-model').options].some(o => o.value === 'tiny-a')")
        tab.evaluate("document.getElementById('chat-model').value = 'tiny-a';"
                     "document.getElementById('chat-input').value = '<b>Hello</b> there';"
                     "document.getElementById('chat-send').click()")
        tab.wait_for("document.getElementById('chat-state').textContent === 'done'", timeout=60)
        reply = tab.evaluate("document.querySelector('#chat-log .assistant').textContent")
        assert len(reply) > 10
        assert tab.evaluate("document.querySelector('#chat-log .user').textContent") == "<b>Hello</b> there"
        assert tab.evaluate("document.querySelector('#chat-log b') === null")
        tab.screenshot(SHOTS / "playground-light.png")
        # Stop while the request is on its way: the fetch is aborted and the page says so.
        tab.evaluate("document.getElementById('chat-input').value = 'again';"
                     "document.getElementById('chat-send').click(); document.getElementById('chat-stop').click()")
        tab.wait_for("document.getElementById('chat-state').textContent === 'stopped'")
        assert tab.evaluate("document.getElementById('chat-stop').disabled && !document.getElementById('chat-send').disabled")
        assert tab.errors == []


GIB = 2**30


def gpu_status(several_nodes: bool = False) -> str:
    """What a gateway on a GPU box serves on /status (this machine has no GPU: NVML is the one
    part that cannot run here), built from the contract the gateway builds it from; with
    ``several_nodes``, a swarm's: another node's GPU and a third node's memory budget too."""
    from contract.gpu import Gpu, GpuMemory, GpuStatus, GpuUtilization
    from contract.status import GatewayStatus, ModelObject, PoolView, ScheduledModel, SchedulerView
    gpu = Gpu(index=0, name="NVIDIA H200", memory=GpuMemory(total_bytes=80 * GIB, used_bytes=30 * GIB, free_bytes=50 * GIB),
              utilization=GpuUtilization(gpu_percent=37), temperature_c=61, power_w=212.0, power_limit_w=700.0,
              models={"tiny-a": 20 * GIB})
    scheduler = SchedulerView(
        pools={"gpu0": PoolView(capacity_bytes=80 * GIB - 512 * 2**20, models_bytes=24 * GIB, others_bytes=10 * GIB,
                                free_bytes=80 * GIB - 512 * 2**20 - 34 * GIB)},
        models={"tiny-a": ScheduledModel(phase="ready", need_bytes={"gpu0": 24 * GIB}, actual_bytes={"0": 20 * GIB},
                                         ctx_size=8192, parallel=4, in_flight=1, queued=2, ttl_s=300, idle_s=60)})
    if several_nodes:
        scheduler.pools["box2/gpu0"] = PoolView(capacity_bytes=12 * GIB, models_bytes=6 * GIB, others_bytes=0,
                                                free_bytes=6 * GIB)
        scheduler.pools["box3/budget"] = PoolView(capacity_bytes=16 * GIB, models_bytes=0, others_bytes=0,
                                                  free_bytes=16 * GIB)
        scheduler.models["remote"] = ScheduledModel(phase="ready", need_bytes={"box2/gpu0": 6 * GIB}, node="box2")
        scheduler.several_nodes = True
        # /status lists box2's GPU after this box's (its agent's reading): drawn once, from its pool.
        theirs = Gpu(index=0, node="box2", name="RTX 3060", memory=GpuMemory(total_bytes=12 * GIB, used_bytes=6 * GIB,
                                                                             free_bytes=6 * GIB))
        return GatewayStatus(models=[ModelObject(id="tiny-a"), ModelObject(id="remote")],
                             gpu=GpuStatus(available=True, gpus=[gpu, theirs]), scheduler=scheduler).model_dump_json()
    return GatewayStatus(models=[ModelObject(id="tiny-a")], gpu=GpuStatus(available=True, gpus=[gpu]),
                         scheduler=scheduler).model_dump_json()


def test_gpu_memory_is_one_bar_split_into_models_others_free_and_reserve(gateway, browser):
    with browser.tab(ui(gateway)) as tab:
        # The page's next poll of /status reads the GPU box's answer.
        tab.evaluate("const real = window.fetch; const body = %s;"
                     "window.fetch = (url, options) => String(url).endsWith('/status') ? "
                     "Promise.resolve(new Response(JSON.stringify(body), {headers: {'content-type': 'application/json'}}))"
                     " : real(url, options)" % gpu_status())
        tab.evaluate("document.querySelector('.tab[data-view=gpu]').click()")
        tab.wait_for("document.querySelector('#pools .bar') !== null")
        parts = tab.evaluate("[...document.querySelectorAll('#pools .bar > span')].map(s => [s.className, "
                             "parseFloat(s.style.width), s.title])")
        kinds = [kind for kind, _, _ in parts]
        assert kinds == ["ours", "est", "others", "free", "reserve"], parts
        widths = {kind: width for kind, width, _ in parts}
        assert widths["ours"] == pytest.approx(25.0) and widths["est"] == pytest.approx(5.0), parts  # 20 used, 24 est.
        assert widths["others"] == pytest.approx(12.5) and widths["reserve"] == pytest.approx(0.625, abs=1e-3)
        assert sum(widths.values()) == pytest.approx(100.0)
        facts = tab.evaluate("document.querySelector('#pools .facts').textContent")
        assert "util 37%" in facts and "61 °C" in facts and "212 W of 700" in facts
        tab.screenshot(SHOTS / "memory-gpu-light.png")
        tab.evaluate("document.querySelector('.tab[data-view=models]').click()")
        row = tab.wait_for("document.querySelector('tr[data-model=\"tiny-a\"]')?.textContent")
        assert "24.0 GiB / 20.0 GiB" in row and "8192" in row and "1 / 2" in row and "4 min 0 s" in row
        tab.screenshot(SHOTS / "models-gpu-light.png")
        assert tab.errors == []  # a policy refusal (an inline style) would show here


def test_each_nodes_pools_are_drawn_and_named_by_node(gateway, browser):
    with browser.tab(ui(gateway)) as tab:
        tab.evaluate("const real = window.fetch; const body = %s;"
                     "window.fetch = (url, options) => String(url).endsWith('/status') ? "
                     "Promise.resolve(new Response(JSON.stringify(body), {headers: {'content-type': 'application/json'}}))"
                     " : real(url, options)" % gpu_status(several_nodes=True))
        tab.evaluate("document.querySelector('.tab[data-view=gpu]').click()")
        tab.wait_for("document.querySelectorAll('#pools .pool').length === 3")
        titles = tab.evaluate("[...document.querySelectorAll('#pools .pool h2')].map(h => h.textContent)")
        assert titles == ["GPU 0: NVIDIA H200", "GPU 0 on node box2", "Memory budget on node box3"], titles
        remote = tab.evaluate("[...document.querySelectorAll('#pools .pool')[1].querySelectorAll('.bar > span')]"
                              ".map(s => [s.className, parseFloat(s.style.width)])")
        assert remote == [["ours", pytest.approx(50.0)], ["free", pytest.approx(50.0)]], remote
        tab.screenshot(SHOTS / "memory-nodes-light.png")
        tab.evaluate("document.querySelector('.tab[data-view=models]').click()")
        where = tab.wait_for("document.querySelector('tr[data-model=\"remote\"] td:nth-child(3)')?.textContent")
        assert where == "llamadock @ box2"


def test_the_page_comes_back_by_itself_when_the_gateway_restarts(browser, upstreams, tmp_path):
    path = write_upstreams(tmp_path / "upstreams.yaml", {"tiny-a": {"url": upstreams["tiny-a"].url}})
    first = GatewayProcess(path).start()
    try:
        with browser.tab(ui(first)) as tab:
            tab.wait_for("document.getElementById('conn').textContent === 'live'")
            first.stop()
            tab.wait_for("document.getElementById('conn').textContent.startsWith('gateway unreachable')")
            with GatewayProcess(path, port=first.port):  # the same address, a new process
                tab.wait_for("document.getElementById('conn').textContent === 'live'")
                tab.wait_for("document.querySelectorAll('#models tr').length === 1")
    finally:
        first.stop()


KEYS = {"Tab": 9, "Enter": 13}


def press(tab, key: str) -> None:
    for kind in ("keyDown", "keyUp"):
        tab.call("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": KEYS[key],
                                            **({"text": "\r"} if key == "Enter" and kind == "keyDown" else {})})


def test_the_views_are_reached_with_the_keyboard(gateway, browser):
    with browser.tab(ui(gateway)) as tab:
        tab.wait_for("document.querySelectorAll('#models tr').length === 3")
        for _ in range(3):  # Models, Memory, Activity: the tabs come first in the focus order
            press(tab, "Tab")
        assert tab.evaluate("document.activeElement.dataset.view") == "activity"
        assert tab.evaluate("document.activeElement.matches(':focus-visible')")  # the focus ring shows
        press(tab, "Enter")  # a real button: Enter works with no key handler of ours
        tab.wait_for("!document.getElementById('view-activity').hidden")
        assert tab.evaluate("document.querySelector('.tab[aria-current=page]').dataset.view") == "activity"


def test_focus_stays_on_a_models_button_while_the_table_is_redrawn(gateway, browser):
    restart = "document.querySelector('tr[data-model=\"tiny-a\"] button.restart')"
    with browser.tab(ui(gateway)) as tab:
        set_token(tab, TOKEN)
        tab.wait_for(f"{restart} !== null && !{restart}.disabled")
        tab.evaluate(f"{restart}.focus(); window.__polls = polls")
        tab.wait_for("polls >= window.__polls + 2")  # two redraws later
        assert tab.evaluate(f"document.activeElement === {restart}")
        press(tab, "Enter")  # restart: this gateway has no orchestrator, and says so
        tab.wait_for("document.getElementById('notice').textContent.includes('No orchestrator is configured')")


def test_remove_asks_for_a_second_click_first(gateway, browser):
    remove = "document.querySelector('tr[data-model=\"tiny-a\"] button.remove')"
    with browser.tab(ui(gateway)) as tab:
        set_token(tab, TOKEN)
        tab.wait_for(f"{remove} !== null && !{remove}.disabled")
        tab.evaluate(f"{remove}.click()")
        tab.wait_for(f"{remove}.textContent === 'Confirm remove'")
        assert not any(url.endswith("/admin/models/tiny-a") for url in tab.requests)  # nothing sent yet
        tab.evaluate(f"{remove}.click()")
        tab.wait_for("document.getElementById('notice').textContent.includes('No orchestrator is configured')")
        assert any(url.endswith("/admin/models/tiny-a") for url in tab.requests)
        assert tab.evaluate("document.getElementById('add-form').hidden")  # no orchestrator: no files to add


def test_a_log_keeps_its_colours_and_shows_markup_as_text(gateway, browser):
    with browser.tab(ui(gateway)) as tab:
        set_token(tab, TOKEN)
        tab.wait_for("document.getElementById('token-state').textContent === 'admin'")
        tab.evaluate("document.querySelector('.tab[data-view=logs]').click()")
        tab.wait_for("[...document.getElementById('logs-model').options].some(o => o.value === 'tiny-a')")
        tab.evaluate("document.getElementById('logs-model').value = 'tiny-a'; document.getElementById('logs-follow').click()")
        # This gateway has no orchestrator (it has the logs): the page shows the gateway's reason.
        tab.wait_for("document.getElementById('logs-state').textContent.includes('No orchestrator is configured')")
        # What a followed log's reads can hold, fed to the page as its stream would: a colour escape
        # split across two reads, and a line that looks like markup.
        tab.evaluate(r"""appendLog('main: <img src=x onerror="window.__pwned=1"> \x1b[3'); """
                     r"""appendLog('1mload failed\x1b[0m done\n')""")
        out = tab.evaluate("document.getElementById('logs-out').textContent")
        assert out == 'main: <img src=x onerror="window.__pwned=1"> load failed done\n'
        assert tab.evaluate("[...document.querySelectorAll('#logs-out span.ansi-fg31')].map(s => s.textContent)") \
            == ["load failed"]
        assert tab.evaluate("document.querySelector('#logs-out img') === null && window.__pwned === undefined")
        tab.screenshot(SHOTS / "logs-light.png")
