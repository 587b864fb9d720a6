"""``realspo annotate`` in the real browser: Debian's headless Chromium through Selenium.

Skipped when Chromium or its driver is missing, unless ``REALSPO_REQUIRE_BROWSER=1`` (set by
``make test-browser``, which installs them and which CI runs): then a missing browser fails.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
REQUIRED = os.environ.get("REALSPO_REQUIRE_BROWSER") == "1"


def _bench():
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    return importlib.import_module("bench_annotate")


@pytest.fixture(scope="module")
def bench():
    bench = _bench()
    missing = [p for p in (bench.CHROMIUM, bench.CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium")
    if missing:
        if REQUIRED:
            pytest.fail(f"REALSPO_REQUIRE_BROWSER=1 but {missing} missing (make test-browser)")
        pytest.skip(f"no browser here ({missing}); make test-browser installs it")
    return bench


class RequestLog:
    """ASGI wrapper that records every request's method and path (the server's access log)."""

    def __init__(self, app):
        self.app, self.requests = app, []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            self.requests.append((scope["method"], scope["path"]))
        await self.app(scope, receive, send)


@pytest.fixture
def serve(tmp_path):
    """serve(pairs rows, annotators) -> (campaign, base URL, request log); stopped after."""
    import uvicorn

    from realspo.annotate.campaign import CampaignSpec, open_campaign
    from realspo.annotate.serve import bind
    from realspo.annotate.server import create_app

    running = []

    def start(rows, annotators=("alice",)):
        pairs = tmp_path / "pairs.jsonl"
        pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        campaign, _ = open_campaign(CampaignSpec(str(pairs), list(annotators)),
                                    tmp_path / "campaign")
        app = create_app(campaign)
        log = RequestLog(app)
        sock = bind("127.0.0.1", 0)
        server = uvicorn.Server(uvicorn.Config(log, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread, app, sock))
        return campaign, f"http://127.0.0.1:{sock.getsockname()[1]}", log

    yield start
    for server, thread, app, sock in running:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.api.close()
        sock.close()


@pytest.fixture
def driver(bench):
    driver = bench.make_driver(performance_log=True)
    yield driver
    driver.quit()


def state(driver) -> str:
    return driver.execute_script("return document.body.dataset.state")


def task_id(driver) -> str:
    return driver.execute_script("return document.body.dataset.taskId")


def text(driver, element_id: str) -> str:
    return driver.execute_script(f"return document.getElementById('{element_id}').textContent")


def press(bench, driver, key: str) -> None:
    """Press ``key`` and wait until the page has saved and shown what comes next."""
    from selenium.webdriver.common.action_chains import ActionChains

    before = (task_id(driver), text(driver, "progress-text"))
    ActionChains(driver).send_keys(key).perform()
    bench.wait_for(driver, lambda d: state(d) in ("ready", "done")
                   and (task_id(d), text(d, "progress-text")) != before)


PAIRS = [
    {"pair_id": "capital", "prompt": "System: You are a concise assistant.\n\nHuman: What is the "
     "capital of Australia, and why is it not Sydney?\n\nAssistant:",
     "response_a": "The capital is Canberra. It was chosen in 1908 as a compromise between "
                   "Sydney and Melbourne, the two largest cities, which both wanted the title.",
     "response_b": "Sydney is the capital of Australia; it is the largest city and home to the "
                   "Opera House.\n\nTo be honest, many people think",
     "finished_b": False},
    {"pair_id": "boil", "prompt": "\n\nHuman: How long should I boil an egg for a runny yolk?"
     "\n\nAssistant:", "response_a": "About 6 minutes from boiling water, then cool it in cold "
     "water.", "response_b": "Boil it for 15 minutes."},
    {"pair_id": "haiku", "prompt": "\n\nHuman: Write a haiku about autumn.\n\nAssistant:",
     "response_a": "Leaves drift on cold wind\ncrimson letters to the ground\nthe year signs "
                   "its name", "response_b": "Autumn is a season after summer."},
    {"pair_id": "sort", "prompt": "\n\nHuman: How do I sort a list in Python?\n\nAssistant:",
     "response_a": "Use sorted(xs) for a new list, or xs.sort() to sort in place.",
     "response_b": "You can't."},
    {"pair_id": "sleep", "prompt": "\n\nHuman: Any tip to sleep better?\n\nAssistant:",
     "response_a": "Keep a regular schedule and avoid screens an hour before bed.",
     "response_b": "Drink coffee late."},
    {"pair_id": "water", "prompt": "\n\nHuman: Why is the sea salty?\n\nAssistant:",
     "response_a": "Rivers carry dissolved minerals to the sea; water evaporates, salt stays.",
     "response_b": "Because of fish."},
]


def test_label_five_by_keyboard_undo_one_reload(bench, serve, driver, tmp_path):
    campaign, base, _ = serve(PAIRS)
    driver.get(f"{base}/?token={campaign.tokens.annotators['alice']}")
    bench.wait_ready(driver)
    assert "token" not in driver.current_url  # moved out of the address bar
    assert text(driver, "progress-text") == "0 / 6"
    shot = os.environ.get("REALSPO_ANNOTATE_SCREENSHOT") or str(tmp_path / "annotate.png")
    shown = []
    for key in "abtsa":
        # the page as an annotator sees it (for the docs when asked): the pair with a system
        # prompt and a cut-off response shows the most
        if "Canberra" in text(driver, "task") and not Path(shot).exists():
            driver.save_screenshot(shot)
        shown.append(task_id(driver))
        press(bench, driver, key)
    assert text(driver, "progress-text") == "5 / 6"
    press(bench, driver, "u")
    assert text(driver, "progress-text") == "4 / 6"
    assert task_id(driver) == shown[-1]  # the undone task is back on screen
    driver.refresh()
    bench.wait_ready(driver)  # the token survived the reload (sessionStorage)
    assert text(driver, "progress-text") == "4 / 6"
    assert driver.execute_script("return document.getElementById('progress-bar').value") == 4
    assert task_id(driver) == shown[-1]
    events = [json.loads(line) for line in
              (campaign.directory / "journals" / "alice.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["label"] * 5 + ["undo"]
    assert [e["answer"] for e in events[:5]] == ["A", "B", "tie", "skip", "A"]
    assert events[-1]["undoes"] == events[4]["seq"]
    if not Path(shot).exists():  # the first task was another pair: shoot the one on screen
        driver.save_screenshot(shot)
    assert Path(shot).stat().st_size > 10_000
    # on a narrow screen the responses stack, A above B
    driver.set_window_size(480, 900)
    a_box, b_box = (driver.execute_script(
        f"const r = document.getElementById('response-{s}').getBoundingClientRect();"
        "return [r.left, r.top, r.bottom]") for s in "ab")
    assert a_box[0] == b_box[0] and b_box[1] >= a_box[2]
    # the last two answers: a clear done state
    press(bench, driver, "b")
    press(bench, driver, "t")
    assert state(driver) == "done" and text(driver, "progress-text") == "6 / 6"
    assert driver.execute_script("return document.getElementById('done').hidden") is False
    assert driver.execute_script("return document.getElementById('task').hidden") is True


HOSTILE = ("<script>window.__pwned = 'script'; alert(1)</script>\n"
           "<img src=x onerror=\"window.__pwned = 'img'; alert(2)\">\n"
           "<a href=\"javascript:window.__pwned = 'link'\">click me</a>\n"
           "[click](javascript:alert(3))\n"
           "![tracker](/tracker.png) ![remote](http://198.51.100.7/pixel.png)\n"
           "<style>body { background: url(/style-fetch.png) }</style>")


def test_hostile_model_output_neither_runs_nor_fetches(bench, serve, driver):
    from selenium.common.exceptions import NoAlertPresentException

    rows = [{"pair_id": "x", "prompt": "System: <script>window.__pwned='system'</script>\n\n"
             "Human: <img src=x onerror=\"window.__pwned='prompt'\">\n\nAssistant:",
             "response_a": HOSTILE, "response_b": "plain answer " + HOSTILE}]
    campaign, base, log = serve(rows)
    driver.get(f"{base}/?token={campaign.tokens.annotators['alice']}")
    bench.wait_ready(driver)
    # give anything that might run or load a moment: the page's own work is done by now
    driver.execute_script("return new Promise(r => setTimeout(r, 500))")
    assert driver.execute_script("return window.__pwned") is None
    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert.text  # noqa: B018
    # shown as text, exactly as the model wrote it
    assert {text(driver, "text-a"), text(driver, "text-b")} == {HOSTILE, "plain answer " + HOSTILE}
    counts = driver.execute_script(
        "const t = document.getElementById('task');"
        "return [t.querySelectorAll('img, script, a, style, iframe').length,"
        "        document.scripts.length, document.images.length]")
    assert counts == [0, 1, 0]  # only the page's own script
    expected = {"/", "/static/annotate.js", "/static/annotate.css", "/api/whoami", "/api/next",
                "/favicon.ico"}
    paths = {path for _, path in log.requests}
    assert paths <= expected and {"/api/next", "/static/annotate.js"} <= paths, paths
    fetched = set()
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            fetched.add(message["params"]["request"]["url"])
    assert fetched and all(url.startswith(base + "/") for url in fetched), fetched
    assert not any(p in url for url in fetched for p in ("tracker", "pixel", "style-fetch", "/x"))


def test_the_owner_link_shows_everyones_progress(bench, serve, driver):
    campaign, base, _ = serve(PAIRS, annotators=("alice", "bob"))
    driver.get(f"{base}/?token={campaign.tokens.annotators['bob']}")
    bench.wait_ready(driver)
    press(bench, driver, "a")
    driver.get(f"{base}/?token={campaign.tokens.owner}")
    bench.wait_for(driver, lambda d: state(d) == "owner")
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#owner-rows tr')].map("
        "r => [...r.cells].slice(0, 2).map(c => c.textContent))")
    assert rows == [["alice", "0 / 3"], ["bob", "1 / 3"]]  # overlap 1: three pairs each
    report = text(driver, "owner-report")
    assert "Krippendorff's alpha" in report and "agreement with the aggregate bob" in report
    assert driver.execute_script("return document.getElementById('task').hidden") is True
