"""Label Studio, both ways: the import JSON and labeling config realspo writes, the export it
reads, and a round trip through a real Label Studio server.

The server test needs the ``label-studio`` package in a virtual environment of its own (its
pins clash with ours): ``make test-label-studio`` creates ``.venv-label-studio`` and runs this
file with ``REALSPO_REQUIRE_LABEL_STUDIO=1``. Without that variable the test is skipped when
no Label Studio is found (``LABEL_STUDIO_VENV``, default ``.venv-label-studio``); with it, a
missing Label Studio is a failure. realspo talks to the server only over its HTTP API.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

from realspo.cli import main
from realspo.labels.label_studio import LABELING_CONFIG

ROOT = Path(__file__).resolve().parent.parent


def _pairs(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({
        "pair_id": f"q{i}:0-1", "prompt": f"Question {i}?", "response_a": f"GOOD answer {i}.",
        "response_b": f"bad answer {i}.", "similarity": i / n, "prompt_id": f"q{i}",
        **({"finished_b": False} if i == 0 else {})}) + "\n" for i in range(n)), encoding="utf-8")
    return path


def _export(tmp_path: Path) -> tuple[Path, Path, list[dict]]:
    pairs, tasks = _pairs(tmp_path), tmp_path / "tasks.json"
    assert main(["label", "--pairs", str(pairs), "--export-tasks", str(tasks),
                 "--task-format", "label-studio"]) == 0
    return pairs, tasks, json.loads(tasks.read_text(encoding="utf-8"))


def _result(choice: str, control: str = "preference") -> list[dict]:
    return [{"from_name": control, "to_name": "A", "type": "choices",
             "value": {"choices": [choice]}}]


def _good(data: dict) -> str:
    return "A" if data["A"].startswith("GOOD") else "B"


def test_label_studio_tasks_and_config(tmp_path):
    _, tasks, items = _export(tmp_path)
    assert len(items) == 6
    data = items[0]["data"]
    assert {"pair_id", "export_id", "prompt", "A", "B", "A_cut_off", "B_cut_off"} <= set(data)
    cut = "A" if data["A_cut_off"] else "B"
    assert data[f"{cut}_cut_off"] is True and "cut off here" in data[cut]
    config = (tmp_path / "tasks.label-config.xml").read_text(encoding="utf-8")
    assert config == LABELING_CONFIG
    assert '<Choices name="preference"' in config
    assert re.findall(r'<Choice value="([^"]+)"', config) == ["A", "B", "tie", "skip"]


def _export_file(tmp_path: Path, items: list[dict]) -> Path:
    path = tmp_path / "export.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    return path


def test_a_label_studio_export_is_read_one_annotator_per_annotation(tmp_path, capsys):
    pairs, _, items = _export(tmp_path)
    export = [{"id": 100 + i, "data": it["data"], "annotations": [
        {"completed_by": user, "result": _result(_good(it["data"])), "was_cancelled": False}
        for user in (1, 2)] + [{"completed_by": 3, "result": [], "was_cancelled": True}]}
        for i, it in enumerate(items)]
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--pairs", str(pairs), "--annotations", str(_export_file(tmp_path, export)),
                 "--key", str(tmp_path / "tasks.key.jsonl"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(r["chosen"].startswith("GOOD") and r["n_annotators"] == 2
                                  for r in rows)
    report = json.loads((tmp_path / "labels.report.json").read_text())
    assert report["answers"]["cancelled"] == 6
    assert set(report["answers"]["per_annotator"]) == {"user-1", "user-2"}


def _refused(argv: list[str], capsys, *fragments: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_another_control_than_preference_is_refused(tmp_path, capsys):
    pairs, _, items = _export(tmp_path)
    export = [{"id": 7, "data": items[0]["data"], "annotations": [
        {"completed_by": 1, "result": _result("A", control="sentiment")}]}]
    _refused(["label", "--pairs", str(pairs), "--annotations", str(_export_file(tmp_path, export)),
              "--key", str(tmp_path / "tasks.key.jsonl"), "--out", str(tmp_path / "l.jsonl")],
             capsys, "'sentiment', not realspo's 'preference'")
    assert not (tmp_path / "l.jsonl").exists()


def test_tasks_of_another_project_are_refused_naming_them(tmp_path, capsys):
    pairs, _, items = _export(tmp_path)
    export = [{"id": 7, "data": items[0]["data"], "annotations": []},
              {"id": 8, "data": {"text": "someone else's"}, "annotations": []}]
    _refused(["label", "--pairs", str(pairs), "--annotations", str(_export_file(tmp_path, export)),
              "--key", str(tmp_path / "tasks.key.jsonl"), "--out", str(tmp_path / "l.jsonl")],
             capsys, "task(s) 8 have no pair_id")


# --- a real Label Studio server ---------------------------------------------------------------


def _label_studio() -> Path | None:
    venv = Path(os.environ.get("LABEL_STUDIO_VENV", ROOT / ".venv-label-studio"))
    exe = venv / "bin" / "label-studio"
    if exe.exists():
        return exe
    if os.environ.get("REALSPO_REQUIRE_LABEL_STUDIO") == "1":
        pytest.fail(f"REALSPO_REQUIRE_LABEL_STUDIO=1 but no Label Studio at {exe} "
                    "(run `make test-label-studio`)")
    pytest.skip(f"no Label Studio at {exe}; `make test-label-studio` installs it")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signup(httpx, base: str, email: str, password: str) -> str:
    """Sign a new user up through Label Studio's own form; return their API token."""
    with httpx.Client(base_url=base, follow_redirects=False, timeout=60) as client:
        page = client.get("/user/signup/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        reply = client.post("/user/signup/", data={"csrfmiddlewaretoken": csrf, "email": email,
                                                   "password": password},
                            headers={"Referer": f"{base}/user/signup/"})
        assert reply.status_code == 302, reply.text[:300]
        return client.get("/api/current-user/token").json()["token"]


@pytest.mark.slow
def test_round_trip_through_a_real_label_studio_server(tmp_path, capsys):
    exe = _label_studio()
    httpx = pytest.importorskip("httpx")
    pairs, tasks, items = _export(tmp_path)
    port, token = _free_port(), "realspo-test-token-0123456789"
    base = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "ls-data"
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir), "DJANGO_DB": "sqlite",
           "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false"}
    start = time.monotonic()
    log = (tmp_path / "label-studio.log").open("w")
    server = subprocess.Popen([str(exe), "start", "--data-dir", str(data_dir), "--no-browser",
                               "--host", "127.0.0.1", "--internal-host", "127.0.0.1",
                               "--port", str(port), "--username", "admin@example.com",
                               "--password", "realspo-admin-pw", "--user-token", token,
                               "--enable-legacy-api-token"],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            try:
                if httpx.get(f"{base}/api/version", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "label-studio.log").read_text()[-2000:]
            assert time.monotonic() - start < 600, "Label Studio did not start in 10 minutes"
            time.sleep(1)
        up = time.monotonic()
        admin = {"Authorization": f"Token {token}"}
        project = httpx.post(f"{base}/api/projects", headers=admin, timeout=60, json={
            "title": "realspo", "label_config": (tmp_path / "tasks.label-config.xml").read_text()})
        assert project.status_code == 201, project.text[:500]
        pid = project.json()["id"]
        imported = httpx.post(f"{base}/api/projects/{pid}/import", headers=admin, json=items,
                              timeout=60)
        assert imported.status_code == 201, imported.text[:500]
        listed = httpx.get(f"{base}/api/tasks", headers=admin, timeout=60,
                           params={"project": pid, "page_size": 100}).json()
        ls_tasks = listed["tasks"] if isinstance(listed, dict) else listed
        assert len(ls_tasks) == 6
        people = {f"annotator{i}@example.com": _signup(httpx, base, f"annotator{i}@example.com",
                                                       f"realspo-pw-{i}-x") for i in (1, 2, 3)}
        for n, user_token in enumerate(people.values()):
            for t in ls_tasks:
                # annotator 3 answers the BAD response on the first task and cancels the last
                good = _good(t["data"])
                answer = ("B" if good == "A" else "A") if (n == 2 and t is ls_tasks[0]) else good
                body = {"result": _result(answer), "project": pid,
                        "was_cancelled": n == 2 and t is ls_tasks[-1]}
                made = httpx.post(f"{base}/api/tasks/{t['id']}/annotations/", json=body,
                                  headers={"Authorization": f"Token {user_token}"}, timeout=60)
                assert made.status_code == 201, made.text[:500]
        export = httpx.get(f"{base}/api/projects/{pid}/export", headers=admin, timeout=120,
                           params={"exportType": "JSON"})
        assert export.status_code == 200, export.text[:500]
        (tmp_path / "export.json").write_bytes(export.content)
        round_trip = time.monotonic() - start
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--pairs", str(pairs), "--annotations", str(tmp_path / "export.json"),
                 "--key", str(tmp_path / "tasks.key.jsonl"), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all(r["chosen"].startswith("GOOD") for r in rows)
    report = json.loads((tmp_path / "labels.report.json").read_text())
    assert sorted(report["answers"]["per_annotator"].values()) == [5, 6, 6]
    assert len(report["answers"]["per_annotator"]) == 3 and report["answers"]["cancelled"] == 1
    with capsys.disabled():
        print(f"\nLabel Studio round trip: server up in {up - start:.0f} s, project + import + "
              f"3 users x 6 annotations + export in {round_trip - (up - start):.0f} s, "
              f"{round_trip:.0f} s in all")
