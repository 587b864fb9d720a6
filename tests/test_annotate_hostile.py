"""``realspo annotate`` under bad input and hostile requests: one line and exit 2 before
anything starts; JSON errors (never a traceback) from the server."""

from __future__ import annotations

import json
import os
import socket

import pytest
from starlette.testclient import TestClient

from realspo.annotate.queues import task_id
from realspo.annotate.server import MAX_BODY_BYTES
from realspo.cli import main
from test_annotate import auth, open_app, write_pairs


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(["annotate", *argv])
    err = capsys.readouterr().err
    return code, err


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("realspo annotate: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def pairs(tmp_path):
    return str(write_pairs(tmp_path / "pairs.jsonl", 6))


@pytest.fixture
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the command: one line, exit 2, nothing written -------------------------------------

def test_a_candidates_file_is_not_a_pairs_file(tmp_path, capsys, free_port):
    cands = tmp_path / "cands.jsonl"
    cands.write_text(json.dumps({"prompt": "Q", "responses": ["a", "b"]}) + "\n")
    code, err = run_cli(capsys, "--pairs", str(cands), "--out", str(tmp_path / "c"),
                        "--port", str(free_port))
    assert_one_line_error(code, err, "cands.jsonl", "response_a")
    assert not (tmp_path / "c").exists()


def test_a_port_in_use_stops_before_anything_is_written(tmp_path, capsys, pairs):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, err = run_cli(capsys, "--pairs", pairs, "--out", str(tmp_path / "c"),
                            "--port", str(port))
    assert_one_line_error(code, err, f"--port {port}", "in use")
    assert not (tmp_path / "c").exists()


def test_a_foreign_directory_is_refused_and_left_alone(tmp_path, capsys, pairs, free_port):
    foreign = tmp_path / "thesis"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("my work")
    code, err = run_cli(capsys, "--pairs", pairs, "--out", str(foreign), "--port", str(free_port))
    assert_one_line_error(code, err, "thesis", "not a realspo annotate campaign")
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_a_campaign_over_another_pairs_file_is_refused(tmp_path, capsys, pairs, free_port):
    campaign, _, app = open_app(tmp_path, annotators=("alice",), overlap=1)
    app.state.api.close()
    other = write_pairs(tmp_path / "other.jsonl", 7)
    before = sorted(p.name for p in campaign.directory.rglob("*"))
    code, err = run_cli(capsys, "--pairs", str(other), "--out", str(campaign.directory),
                        "--annotators", "alice", "--port", str(free_port))
    assert_one_line_error(code, err, "another pairs file")
    assert sorted(p.name for p in campaign.directory.rglob("*")) == before


def test_a_campaign_with_other_annotators_is_refused(tmp_path, capsys, free_port):
    campaign, _, app = open_app(tmp_path, annotators=("alice",), overlap=1)
    app.state.api.close()
    code, err = run_cli(capsys, "--pairs", str(tmp_path / "pairs.jsonl"), "--out",
                        str(campaign.directory), "--annotators", "alice,bob",
                        "--port", str(free_port))
    assert_one_line_error(code, err, "other options", "annotators")


@pytest.mark.parametrize("names, fragment", [
    ("alice,bob,alice", "'alice' is given twice"),
    ("Alice,alice", "given twice"),
    ("../etc/passwd", "not a name"),
    ("a/b", "not a name"),
    ("", "not a name"),
])
def test_bad_annotator_names_are_refused(tmp_path, capsys, pairs, free_port, names, fragment):
    code, err = run_cli(capsys, "--pairs", pairs, "--out", str(tmp_path / "c"),
                        "--annotators", names, "--port", str(free_port))
    assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "c").exists()


def test_overlap_above_the_annotators_is_refused(tmp_path, capsys, pairs, free_port):
    code, err = run_cli(capsys, "--pairs", pairs, "--out", str(tmp_path / "c"),
                        "--annotators", "alice,bob", "--overlap", "3", "--port", str(free_port))
    assert_one_line_error(code, err, "--overlap 3")
    assert not (tmp_path / "c").exists()


def test_a_gold_pair_without_its_answer_is_refused(tmp_path, capsys, pairs, free_port):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"pair_id": "g1", "prompt": "Q", "response_a": "x",
                                "response_b": "y"}) + "\n")
    code, err = run_cli(capsys, "--pairs", pairs, "--out", str(tmp_path / "c"),
                        "--gold", str(gold), "--port", str(free_port))
    assert_one_line_error(code, err, "gold.jsonl", "answer")
    assert not (tmp_path / "c").exists()


def test_tokens_readable_by_others_are_refused(tmp_path, capsys, free_port):
    campaign, _, app = open_app(tmp_path, annotators=("alice",), overlap=1)
    app.state.api.close()
    os.chmod(campaign.directory / "tokens.json", 0o644)
    code, err = run_cli(capsys, "--pairs", str(tmp_path / "pairs.jsonl"), "--out",
                        str(campaign.directory), "--annotators", "alice",
                        "--port", str(free_port))
    assert_one_line_error(code, err, "tokens.json", "chmod 600")


def test_tokens_are_long_random_and_owner_only(tmp_path):
    campaign, _, app = open_app(tmp_path)
    app.state.api.close()
    tokens = [campaign.tokens.owner, *campaign.tokens.annotators.values()]
    assert len(set(tokens)) == len(tokens) and all(len(t) >= 43 for t in tokens)  # 256 bits
    assert (campaign.directory / "tokens.json").stat().st_mode & 0o777 == 0o600


# --- the server: JSON errors, never a traceback ---------------------------------------------

@pytest.fixture
def served(tmp_path):
    campaign, _, app = open_app(tmp_path)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield campaign, app, client
    app.state.api.close()


def assert_json_error(reply, status: int) -> dict:
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"].startswith("application/json")
    assert "Traceback" not in reply.text and "File \"" not in reply.text
    return reply.json()


@pytest.mark.parametrize("header", [None, "Bearer wrong", "Basic abc", "Bearer ", "bearer"])
def test_a_bad_or_missing_token_is_refused(served, header):
    _, _, client = served
    headers = {"Authorization": header} if header is not None else {}
    for method, path in [("GET", "/api/next"), ("POST", "/api/label"), ("POST", "/api/undo"),
                         ("GET", "/api/progress"), ("GET", "/api/whoami")]:
        assert "token" in assert_json_error(client.request(method, path, headers=headers), 401)["error"]


def test_another_annotators_task_is_refused(served):
    campaign, _, client = served
    alice = auth(campaign.tokens.annotators["alice"])
    theirs = [p for p in campaign.queues["bob"] if p not in campaign.queues["alice"]]
    assert theirs
    for pair_id in theirs:  # bob's task ids, and the raw pair ids, are not alice's tasks
        for task in (task_id(campaign.export_id, "bob", pair_id), pair_id):
            reply = client.post("/api/label", headers=alice, json={"task_id": task, "answer": "A"})
            assert "not a task" in assert_json_error(reply, 404)["error"]
    assert not (campaign.directory / "journals" / "alice.jsonl").exists()  # nothing written


def test_a_second_answer_without_undo_is_refused(served):
    campaign, _, client = served
    alice = auth(campaign.tokens.annotators["alice"])
    task = client.get("/api/next", headers=alice).json()
    assert client.post("/api/label", headers=alice,
                       json={"task_id": task["task_id"], "answer": "A"}).status_code == 200
    reply = client.post("/api/label", headers=alice, json={"task_id": task["task_id"], "answer": "B"})
    assert "already answered" in assert_json_error(reply, 409)["error"]
    lines = (campaign.directory / "journals" / "alice.jsonl").read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["answer"] == "A"


def test_undo_with_nothing_to_undo_is_refused(served):
    campaign, _, client = served
    reply = client.post("/api/undo", headers=auth(campaign.tokens.annotators["carol"]))
    assert "nothing to undo" in assert_json_error(reply, 409)["error"]


@pytest.mark.parametrize("body, status, fragment", [
    (b"not json", 400, "JSON object"),
    (b"[1, 2]", 400, "JSON object"),
    (b'{"task_id": 1, "answer": "A"}', 404, "task_id"),
    (b'{"task_id": "TASK", "answer": "a"}', 400, "answer"),
    (b'{"task_id": "TASK", "answer": ["A"]}', 400, "answer"),
    (b'{"task_id": "TASK", "answer": "A", "comment": 5}', 400, "comment"),
    (b'{"task_id": "TASK", "answer": "A", "comment": "' + b"x" * 3000 + b'"}', 400, "comment"),
    (b'{"task_id": "TASK", "answer": "A", "file": "/etc/passwd"}', 400, "unknown field"),
    (b'{"task_id": "../../tokens.json", "answer": "A"}', 404, "task_id"),
    (b"\xff\xfe", 400, "JSON object"),
])
def test_malformed_bodies_are_refused(served, body, status, fragment):
    campaign, _, client = served
    alice = auth(campaign.tokens.annotators["alice"])
    task = client.get("/api/next", headers=alice).json()["task_id"]
    reply = client.post("/api/label", headers={**alice, "Content-Type": "application/json"},
                        content=body.replace(b"TASK", task.encode()))
    assert fragment in assert_json_error(reply, status)["error"]
    assert not (campaign.directory / "journals" / "alice.jsonl").exists()  # nothing written


def test_oversized_bodies_are_refused_declared_or_streamed(served):
    campaign, _, client = served
    alice = auth(campaign.tokens.annotators["alice"])
    big = b'{"comment": "' + b"x" * (MAX_BODY_BYTES * 4) + b'"}'
    assert_json_error(client.post("/api/label", headers=alice, content=big), 413)

    def chunks():  # no Content-Length: sent chunked
        for _ in range(64):
            yield b"x" * 1024

    assert_json_error(client.post("/api/label", headers=alice, content=chunks()), 413)
    lying = {**alice, "Content-Length": "-5"}
    assert client.post("/api/label", headers=lying, content=b"").status_code in (400, 413)


@pytest.mark.parametrize("path", ["/static/../tokens.json", "/static/%2e%2e/tokens.json",
                                  "/static/..%2ftokens.json", "/tokens.json", "/journals/alice.jsonl",
                                  "/static//etc/passwd"])
def test_no_request_reaches_a_campaign_file(served, path):
    _, _, client = served
    reply = client.get(path)
    assert reply.status_code == 404 and "token" not in reply.text.lower().replace("tokens.json", "")


def test_a_server_fault_is_a_json_error_without_a_traceback(served, monkeypatch):
    campaign, app, client = served
    queue = app.state.api.queues["alice"]

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals /srv/path")

    monkeypatch.setattr(queue, "label", broken)
    alice = auth(campaign.tokens.annotators["alice"])
    reply = client.post("/api/label", headers=alice, json={"task_id": "x", "answer": "A"})
    body = assert_json_error(reply, 500)
    assert "secret internals" not in reply.text and body["error"].startswith("internal error")


def test_a_wrong_method_is_a_json_error(served):
    campaign, _, client = served
    assert_json_error(client.get("/api/label", headers=auth(campaign.tokens.owner)), 405)


def test_help_imports_no_web_stack():
    from test_cli_startup import _imported

    modules, printed = _imported(["annotate", "--help"])
    assert "--annotators" in printed and "--public-url" in printed
    heavy = {m for m in modules if m.split(".")[0] in ("starlette", "uvicorn", "jinja2", "torch")}
    assert not heavy, sorted(heavy)[:5]


def test_a_preference_file_is_not_a_pairs_file(tmp_path, capsys, free_port):
    prefs = tmp_path / "prefs.jsonl"
    prefs.write_text(json.dumps({"prompt": "Q", "chosen": "a", "rejected": "b"}) + "\n")
    code, err = run_cli(capsys, "--pairs", str(prefs), "--out", str(tmp_path / "c"),
                        "--port", str(free_port))
    assert_one_line_error(code, err, "prefs.jsonl", "response_a")
    assert not (tmp_path / "c").exists()


def test_a_second_server_on_the_same_campaign_is_refused(tmp_path, capsys, free_port):
    from realspo.outputs import output_lock

    campaign, _, app = open_app(tmp_path, annotators=("alice",), overlap=1)
    app.state.api.close()
    with output_lock(campaign.directory):  # as a running server holds it
        code, err = run_cli(capsys, "--pairs", str(tmp_path / "pairs.jsonl"), "--out",
                            str(campaign.directory), "--annotators", "alice",
                            "--port", str(free_port))
    assert_one_line_error(code, err, "another run")
