"""Benchmark 11: ``realspo annotate`` under load, killed in the middle, and by keyboard.

Load: a real ``realspo annotate`` server process on loopback; ``--annotators`` clients
(httpx, concurrently) each fetch their next task and post a label until their queues are
empty, ``--labels`` labels in all. When half the labels are acknowledged, the server is
SIGKILLed and started again with the same command; the clients retry through the outage.
At the end every acknowledged label must be in the journals (0 lost), and no pair may be
answered twice by one annotator (0 duplicated). Reported: p50/p95 latency of acknowledged
``POST /api/label`` (which returns only after the journal line is fsynced).

Browser (``--browser-pairs N``): the real headless Chromium labels N pairs by keyboard (one
key each, waiting for the next task to show); reported: the total time.

    .venv/bin/python benchmarks/bench_annotate.py [--annotators 20] [--labels 2000]
        [--browser-pairs 20] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, _cpu_model, markdown_table, section, write_section  # noqa: E402

ENTRY = "import sys; from realspo.cli import main; sys.exit(main())"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def write_pairs(path: Path, n: int) -> Path:
    """``n`` annotation rows with short, distinct texts."""
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"pair_id": f"p{i}", "prompt": f"\n\nHuman: question {i}?"
                                 "\n\nAssistant:", "response_a": f"answer one to {i}",
                                 "response_b": f"answer two to {i}"}) + "\n")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``realspo annotate`` in a child process; :meth:`start` waits for its links."""

    def __init__(self, args: list[str]) -> None:
        self.args, self.proc, self.links = args, None, {}

    def start(self, timeout: float = 60.0) -> dict[str, str]:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep
               + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, "-c", ENTRY, "annotate", *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=env)
        links, deadline = {}, time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited: {self.proc.stderr.read()}")
            name, _, url = line.strip().partition(": http")
            if url:
                links[name] = "http" + url
            if line.startswith("labels are saved"):
                self.links = links
                return links
        raise RuntimeError("server did not print its links in time")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)


@dataclass
class LoadResult:
    """What the clients saw and what the journals hold."""

    acknowledged: set[tuple[str, str]] = field(default_factory=set)  # (annotator, task id)
    latencies: list[float] = field(default_factory=list)
    acknowledged_before_kill: int = 0
    refused_as_already_saved: int = 0  # sent, saved, reply lost to the kill
    replies_lost: int = 0  # POSTs whose connection the kill cut (saved or not)
    journal_labels: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def lost(self) -> int:
        return len(self.acknowledged - set(self.journal_labels))

    @property
    def duplicated(self) -> int:
        return len(self.journal_labels) - len(set(self.journal_labels))

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _annotator(name: str, url: str, port_of: dict, result: LoadResult,
                     rng: random.Random) -> None:
    import httpx

    token = url.split("token=", 1)[1]
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=30.0) as client:
        while True:
            base = f"http://127.0.0.1:{port_of['port']}"
            try:
                task = (await client.get(base + "/api/next", headers=headers)).json()
            except (httpx.TransportError, ValueError):  # the server is down: try again
                await asyncio.sleep(0.05)
                continue
            if task["done"]:
                return
            body = {"task_id": task["task_id"], "answer": rng.choice(["A", "B", "tie", "skip"])}
            start = time.perf_counter()
            try:
                reply = await client.post(base + "/api/label", headers=headers, json=body)
            except httpx.TransportError:
                result.replies_lost += 1
                await asyncio.sleep(0.05)
                continue
            elapsed = time.perf_counter() - start
            if reply.status_code == 200:
                result.acknowledged.add((name, task["task_id"]))
                result.latencies.append(elapsed)
            elif reply.status_code == 409:  # saved before a kill; its reply never came
                result.refused_as_already_saved += 1
            else:
                raise RuntimeError(f"{name}: {reply.status_code} {reply.text}")


async def _drive(links: dict[str, str], server: ServerProcess, kill_after: int | None,
                 result: LoadResult, seed: int) -> None:
    port_of = {"port": int(links["owner (progress)"].split(":")[2].split("/")[0])}
    names = [n for n in links if not n.startswith("owner")]
    tasks = [asyncio.create_task(_annotator(n, links[n], port_of, result, random.Random(seed + i)))
             for i, n in enumerate(names)]
    if kill_after is not None:
        while len(result.acknowledged) < kill_after and not all(t.done() for t in tasks):
            await asyncio.sleep(0.005)
        result.acknowledged_before_kill = len(result.acknowledged)
        server.kill()
        await asyncio.to_thread(server.start)
    await asyncio.gather(*tasks)


def run_load(workdir: Path, annotators: int, labels: int, overlap: int = 2,
             seed: int = 0, kill: bool = True) -> LoadResult:
    """Run the load with (``kill``) one SIGKILL and restart when half the labels are
    acknowledged."""
    from realspo.annotate.journal import JOURNALS_DIR
    from realspo.annotate.queues import task_id

    pairs = write_pairs(workdir / f"pairs-{labels}.jsonl", labels // overlap)
    out = workdir / f"campaign-{annotators}x{labels}"
    names = [f"a{i:02d}" for i in range(annotators)]
    server = ServerProcess(["--pairs", str(pairs), "--out", str(out), "--annotators",
                            ",".join(names), "--overlap", str(overlap),
                            "--port", str(free_port())])
    result = LoadResult()
    links = server.start()
    start = time.perf_counter()
    try:
        asyncio.run(_drive(links, server, labels // 2 if kill else None, result, seed))
    finally:
        server.stop()
    result.seconds = time.perf_counter() - start
    export_id = json.loads((out / "campaign.json").read_text())["export_id"]
    for name in names:  # raw lines, not a replay: a duplicate must be counted, not refused
        journal = out / JOURNALS_DIR / f"{name}.jsonl"
        for line in (journal.read_text().splitlines() if journal.exists() else []):
            event = json.loads(line)
            assert event["event"] == "label", event  # the clients never undo
            result.journal_labels.append((name, task_id(export_id, name, event["pair_id"])))
    return result


def time_browser(workdir: Path, n_pairs: int) -> float:
    """Seconds for the real Chromium to label ``n_pairs`` pairs by keyboard."""
    from selenium.webdriver.common.action_chains import ActionChains

    pairs = write_pairs(workdir / "browser-pairs.jsonl", n_pairs)
    server = ServerProcess(["--pairs", str(pairs), "--out", str(workdir / "browser"),
                            "--annotators", "alice", "--port", str(free_port())])
    links = server.start()
    driver = make_driver()
    try:
        driver.get(links["alice"])
        wait_ready(driver)
        start = time.perf_counter()
        for i in range(n_pairs):
            before = driver.execute_script("return document.body.dataset.taskId")
            ActionChains(driver).send_keys("abts"[i % 4]).perform()
            wait_for(driver, lambda d, b=before: d.execute_script(
                "return document.body.dataset.state") in ("ready", "done")
                and (d.execute_script("return document.body.dataset.state") == "done"
                     or d.execute_script("return document.body.dataset.taskId") != b))
        seconds = time.perf_counter() - start
        assert driver.execute_script("return document.body.dataset.state") == "done"
        return seconds
    finally:
        driver.quit()
        server.stop()


def make_driver(performance_log: bool = False):
    """Headless Debian Chromium through its chromedriver (Selenium Manager cannot download)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--no-first-run", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update"):
        options.add_argument(arg)
    if performance_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def wait_for(driver, condition, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.01).until(condition)


def wait_ready(driver) -> None:
    wait_for(driver, lambda d: d.execute_script("return document.body.dataset.state")
             in ("ready", "done", "owner"))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--annotators", type=int, default=20)
    p.add_argument("--labels", type=int, default=2000)
    p.add_argument("--browser-pairs", type=int, default=20, help="0: no browser timing")
    p.add_argument("--single-labels", type=int, default=200,
                   help="labels of the one-annotator run (service time without queueing)")
    p.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        result = run_load(Path(tmp), args.annotators, args.labels)
        # the service time alone: one annotator, one request at a time, no kill
        alone = run_load(Path(tmp), 1, args.single_labels, overlap=1, kill=False)
        browser_s = time_browser(Path(tmp), args.browser_pairs) if args.browser_pairs else None
    p50, p95 = result.percentile(0.50) * 1e3, result.percentile(0.95) * 1e3
    rows = [["acknowledged labels", len(result.acknowledged)],
            ["labels in the journals", len(result.journal_labels)],
            ["acknowledged before the SIGKILL", result.acknowledged_before_kill],
            ["POSTs cut by the kill (no reply)", result.replies_lost],
            ["saved, reply lost to the kill (409 on retry)", result.refused_as_already_saved],
            ["**lost** (acknowledged, not in a journal)", f"**{result.lost}**"],
            ["**duplicated** (one annotator, one pair, twice)", f"**{result.duplicated}**"],
            ["POST /api/label p50", f"{p50:.1f} ms"],
            ["POST /api/label p95", f"{p95:.1f} ms"],
            ["wall time, kill and restart included", f"{result.seconds:.1f} s"],
            [f"POST /api/label p50 / p95, one annotator alone ({args.single_labels} labels)",
             f"{alone.percentile(0.5) * 1e3:.1f} / {alone.percentile(0.95) * 1e3:.1f} ms"]]
    if browser_s is not None:
        rows.append([f"Chromium, {args.browser_pairs} pairs by keyboard",
                     f"{browser_s:.2f} s ({browser_s / args.browser_pairs * 1e3:.0f} ms a pair)"])
    ok = result.lost == 0 and result.duplicated == 0
    info = {"cpu": _cpu_model(), "cores": f"{len(os.sched_getaffinity(0))} usable of {os.cpu_count()}",
            "python": sys.version.split()[0], "journals on": _file_system(tempfile.gettempdir()),
            "load average (1 min) at start": f"{load_before:.1f}"}
    body = section(
        "12. Labeling server under load (`realspo annotate`)",
        sizes={"annotators": args.annotators, "labels": args.labels, "overlap": 2,
               "kill": "SIGKILL once half the labels are acknowledged, then restart"},
        table=markdown_table(["measure", "value"], rows),
        verdict=f"0 lost and 0 duplicated: {'met' if ok else 'NOT met'}",
        notes=["Clients: httpx over loopback, all annotators at once, each posting its next "
               "label as soon as the previous reply came; latency of acknowledged POSTs only "
               "(each waits for its journal line to be fsynced). With 20 clients in a closed "
               "loop on 2 shared cores, most of that time is queueing behind the other "
               "annotators' requests; the one-annotator row is the service time (fsync alone "
               "on this file system: about 3 ms at the median).",
               "The browser row is machine speed (the page's round trip per key), not a "
               "person's reading time."],
        info=info)
    print(body)
    if not args.no_write:
        write_section("annotate", body)
    if not ok:
        raise SystemExit(1)



def _file_system(path: str) -> str:
    """The type of the file system holding ``path`` (what fsync costs depends on it)."""
    best, kind = "", "unknown"
    real = os.path.realpath(path)
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) > 2 and real.startswith(fields[1]) and len(fields[1]) > len(best):
            best, kind = fields[1], fields[2]
    return f"{kind} ({best})"

if __name__ == "__main__":
    main()
