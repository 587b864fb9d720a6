"""``realspo annotate``: the campaign, the API and the journals behave as documented.

The app runs in-process (Starlette's test client); the browser, the load-and-kill and the
hostile-input tests are in their own modules.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from realspo.annotate.assignment import annotator_queues
from realspo.annotate.campaign import CampaignSpec, open_campaign
from realspo.annotate.server import create_app
from realspo.labels.annotation import read_key
from realspo.labels.answers import read_answer_sets


def write_pairs(path: Path, n: int, **extra) -> Path:
    rows = [{"pair_id": f"p{i}", "prompt": f"System: be brief\n\nHuman: question {i}?\n\nAssistant:",
             "response_a": f"first answer {i}", "response_b": f"second answer {i}",
             "finished_a": i % 4 != 0, **extra} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def campaign_dir(tmp_path):
    return tmp_path / "campaign"


def open_app(tmp_path, annotators=("alice", "bob", "carol"), overlap=2, n=12, gold=None):
    pairs = tmp_path / "pairs.jsonl"
    if not pairs.exists():
        write_pairs(pairs, n)
    spec = CampaignSpec(str(pairs), list(annotators), overlap, gold, 0)
    campaign, created = open_campaign(spec, tmp_path / "campaign")
    app = create_app(campaign)
    return campaign, created, app


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_every_pair_goes_to_exactly_overlap_annotators_balanced():
    ids = [f"p{i}" for i in range(100)]
    queues = annotator_queues(ids, ["a", "b", "c", "d"], 3, seed=1, gold_ids=["g1", "g2"])
    counts = Counter(p for q in queues.values() for p in q)
    assert all(counts[p] == 3 for p in ids) and counts["g1"] == counts["g2"] == 4
    assert all(len(set(q)) == len(q) for q in queues.values())  # nobody gets a pair twice
    sizes = [len(q) for q in queues.values()]
    assert max(sizes) - min(sizes) <= 1


def test_a_label_is_on_disk_when_acknowledged_and_undo_takes_it_back(tmp_path):
    campaign, created, app = open_app(tmp_path)
    assert created
    token = campaign.tokens.annotators["alice"]
    with TestClient(app) as client:
        task = client.get("/api/next", headers=auth(token)).json()
        assert task["progress"] == {"done": 0, "total": len(campaign.queues["alice"])}
        assert [t["role"] for t in task["prompt"]] == ["system", "user"]
        reply = client.post("/api/label", headers=auth(token),
                            json={"task_id": task["task_id"], "answer": "A", "comment": "ok"})
        assert reply.status_code == 200 and reply.json()["progress"]["done"] == 1
        journal = (campaign.directory / "journals" / "alice.jsonl").read_text().splitlines()
        event = json.loads(journal[-1])
        assert event["event"] == "label" and event["answer"] == "A" and event["comment"] == "ok"
        assert event["export_id"] == campaign.export_id == read_key(
            campaign.directory / "key.jsonl").export_id
        undone = client.post("/api/undo", headers=auth(token)).json()
        assert undone["undone"] == task["task_id"] and undone["progress"]["done"] == 0
        assert client.get("/api/next", headers=auth(token)).json()["task_id"] == task["task_id"]
        assert json.loads((campaign.directory / "journals" / "alice.jsonl").read_text()
                          .splitlines()[-1]) == {"event": "undo", "seq": 2, "undoes": 1}
    app.state.api.close()


def test_answers_are_read_back_in_the_pairs_own_order(tmp_path):
    campaign, _, app = open_app(tmp_path, annotators=("alice",), overlap=1)
    token = campaign.tokens.annotators["alice"]
    shown_first: dict[str, bool] = {}
    with TestClient(app) as client:
        while not (task := client.get("/api/next", headers=auth(token)).json())["done"]:
            pair_id = next(p for p in campaign.queues["alice"]
                           if task["a"].endswith(" " + p[1:]) and p not in shown_first)
            shown_first[pair_id] = task["a"].startswith("first")
            client.post("/api/label", headers=auth(token),
                        json={"task_id": task["task_id"], "answer": "A"})
    app.state.api.close()
    answers = {r.pair_id: r.answer for r in read_answer_sets([campaign.directory])
               if r.annotator == "alice"}
    # "A" in the shown order is the pair's response_a exactly when it was shown first
    assert answers == {p: "A" if first else "B" for p, first in shown_first.items()}
    assert 0 < sum(shown_first.values()) < len(shown_first)  # some pairs were shown swapped


def test_cut_off_responses_are_flagged_on_the_side_they_are_shown(tmp_path):
    campaign, _, app = open_app(tmp_path, annotators=("alice",), overlap=1)
    token = campaign.tokens.annotators["alice"]
    flags = []
    with TestClient(app) as client:
        while not (task := client.get("/api/next", headers=auth(token)).json())["done"]:
            pair = campaign.pairs[next(p for p in campaign.queues["alice"]
                                       if task["a"].endswith(" " + p[1:]))]
            cut = pair.meta.get("finished_a") is False
            swapped = campaign.key.swapped[pair.pair_id]
            flags.append((task["cut_a"], task["cut_b"]) == ((False, cut) if swapped else (cut, False)))
            client.post("/api/label", headers=auth(token),
                        json={"task_id": task["task_id"], "answer": "skip"})
    app.state.api.close()
    assert flags and all(flags)


def test_a_restart_replays_the_journals_and_keeps_the_links(tmp_path):
    campaign, _, app = open_app(tmp_path)
    token = campaign.tokens.annotators["bob"]
    with TestClient(app) as client:
        for _ in range(3):
            task = client.get("/api/next", headers=auth(token)).json()
            client.post("/api/label", headers=auth(token),
                        json={"task_id": task["task_id"], "answer": "tie"})
        client.post("/api/undo", headers=auth(token))
    app.state.api.close()
    again, created, app = open_app(tmp_path)
    assert not created and again.tokens == campaign.tokens and again.export_id == campaign.export_id
    with TestClient(app) as client:
        assert client.get("/api/progress", headers=auth(token)).json()["progress"]["done"] == 2
    app.state.api.close()


def test_a_torn_last_line_is_ignored_and_cut_off_before_the_next_append(tmp_path):
    campaign, _, app = open_app(tmp_path)
    token = campaign.tokens.annotators["alice"]
    with TestClient(app) as client:
        task = client.get("/api/next", headers=auth(token)).json()
        client.post("/api/label", headers=auth(token), json={"task_id": task["task_id"], "answer": "B"})
    app.state.api.close()
    journal = campaign.directory / "journals" / "alice.jsonl"
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"event": "label", "seq": 2, "pair_id": "p')  # a kill mid-write
    campaign, _, app = open_app(tmp_path)
    with TestClient(app) as client:
        assert client.get("/api/progress", headers=auth(token)).json()["progress"]["done"] == 1
        task = client.get("/api/next", headers=auth(token)).json()
        client.post("/api/label", headers=auth(token), json={"task_id": task["task_id"], "answer": "A"})
    app.state.api.close()
    lines = journal.read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [1, 2]


def test_the_owner_sees_everyones_progress_and_has_no_queue(tmp_path):
    campaign, _, app = open_app(tmp_path)
    owner = campaign.tokens.owner
    with TestClient(app) as client:
        for name in ("alice", "bob"):
            token = campaign.tokens.annotators[name]
            task = client.get("/api/next", headers=auth(token)).json()
            client.post("/api/label", headers=auth(token), json={"task_id": task["task_id"], "answer": "A"})
        progress = client.get("/api/progress", headers=auth(owner)).json()
        assert progress["labels"] == {"done": 2, "total": 24}
        assert {k: v["done"] for k, v in progress["annotators"].items()} == {
            "alice": 1, "bob": 1, "carol": 0}
        assert progress["pairs"]["total"] == 12
        # the agreement report of `label --annotations` so far, recomputed as answers come
        assert progress["report"][0].startswith("Krippendorff's alpha")
        assert "agreement with the aggregate alice  1.000 (n 1)" in progress["report"]
        token = campaign.tokens.annotators["alice"]
        task = client.get("/api/next", headers=auth(token)).json()
        client.post("/api/label", headers=auth(token), json={"task_id": task["task_id"], "answer": "B"})
        report = client.get("/api/progress", headers=auth(owner)).json()["report"]
        assert "agreement with the aggregate alice  1.000 [1.000, 1.000] (n 2)" in report
        assert client.get("/api/next", headers=auth(owner)).status_code == 403
        alone = client.get("/api/progress", headers=auth(campaign.tokens.annotators["carol"])).json()
        assert alone == {"progress": {"done": 0, "total": 8}}  # not the others'
    app.state.api.close()


def test_gold_pairs_are_in_every_queue_and_in_the_key_with_their_answer(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"pair_id": "g1", "prompt": "Q?", "response_a": "right",
                                "response_b": "wrong", "answer": "a"}) + "\n")
    campaign, _, app = open_app(tmp_path, gold=str(gold))
    app.state.api.close()
    (gold_id,) = campaign.key.gold  # re-identified from its texts: the id says nothing
    assert gold_id != "g1" and campaign.key.gold[gold_id] == "A"
    assert all(gold_id in q for q in campaign.queues.values())


def test_the_page_sends_a_csp_that_forbids_inline_script_and_remote_loads(tmp_path):
    campaign, _, app = open_app(tmp_path)
    with TestClient(app) as client:
        page = client.get("/")
        csp = page.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self';" in csp
        assert "unsafe-inline" not in csp and "http" not in csp
        assert "<script src=\"static/annotate.js\"" in page.text
        assert "<script>" not in page.text  # no inline script in the page
        js = client.get("/static/annotate.js")
        assert js.status_code == 200 and "innerHTML" not in js.text
        assert client.get("/api/next").headers["content-security-policy"] == csp
    app.state.api.close()


def test_label_reads_the_campaign_directory_by_majority(tmp_path):
    from realspo.cli import main

    campaign, _, app = open_app(tmp_path, annotators=("alice", "bob"), overlap=2, n=8)
    # alice prefers the first answer on every pair; bob agrees on p0-p3 and disagrees on p4-p7
    with TestClient(app) as client:
        for name in ("alice", "bob"):
            token = campaign.tokens.annotators[name]
            while not (task := client.get("/api/next", headers=auth(token)).json())["done"]:
                number = int(task["a"].rsplit(" ", 1)[1])
                first_is_a = task["a"].startswith("first")
                wants_first = name == "alice" or number < 4
                answer = "A" if first_is_a == wants_first else "B"
                if name == "bob" and number == 3:
                    answer = "skip"  # a skip does not vote: alice alone decides p3
                client.post("/api/label", headers=auth(token),
                            json={"task_id": task["task_id"], "answer": answer})
    app.state.api.close()
    out = tmp_path / "prefs.jsonl"
    assert main(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations",
                 str(campaign.directory), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["pair_id"] for r in rows) == ["p0", "p1", "p2", "p3"]  # p4-p7 disputed: ties
    assert all(r["chosen"].startswith("first") and r["label_source"] == "human" for r in rows)


def test_label_refuses_a_campaign_of_other_pairs_or_an_edited_journal(tmp_path, capsys):
    from realspo.cli import main

    campaign, _, app = open_app(tmp_path, annotators=("alice",), overlap=1, n=4)
    token = campaign.tokens.annotators["alice"]
    with TestClient(app) as client:
        task = client.get("/api/next", headers=auth(token)).json()
        client.post("/api/label", headers=auth(token), json={"task_id": task["task_id"], "answer": "A"})
    app.state.api.close()
    other = write_pairs(tmp_path / "other.jsonl", 4, response_b="changed")
    argv = ["label", "--annotations", str(campaign.directory), "--out", str(tmp_path / "o.jsonl")]
    assert main(["label", "--pairs", str(other), *argv[1:]]) == 2
    assert "texts differ from the pairs file" in capsys.readouterr().err
    journal = campaign.directory / "journals" / "alice.jsonl"
    journal.write_text(journal.read_text() * 2)  # the same label twice, no undo between
    assert main(["label", "--pairs", str(tmp_path / "pairs.jsonl"), *argv[1:]]) == 2
    err = capsys.readouterr().err
    assert "alice.jsonl:line 2" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.jsonl").exists()


def test_the_listening_socket_says_tcp_so_replies_are_not_held_by_nagle():
    """asyncio sets TCP_NODELAY on accepted connections only if the socket's protocol is
    IPPROTO_TCP; a socket made with protocol 0 made every keep-alive reply wait for a
    delayed ACK (~40 ms a request, measured)."""
    import asyncio.base_events as base_events
    import socket

    from realspo.annotate.serve import bind

    sock = bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
        client = socket.create_connection(sock.getsockname())
        accepted, _ = sock.accept()
        base_events._set_nodelay(accepted)  # what asyncio does to each accepted connection
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        accepted.close()
        client.close()
    finally:
        sock.close()


def test_label_reads_a_campaign_midway(tmp_path):
    """While labeling goes on, some annotators have not started and some took every answer
    back: the campaign is still read, with the answers there are."""
    from realspo.cli import main

    campaign, _, app = open_app(tmp_path, annotators=("alice", "bob", "carol"), overlap=1, n=6)
    with TestClient(app) as client:
        for name, undo in (("alice", False), ("bob", True)):
            token = campaign.tokens.annotators[name]
            task = client.get("/api/next", headers=auth(token)).json()
            client.post("/api/label", headers=auth(token),
                        json={"task_id": task["task_id"], "answer": "A"})
            if undo:
                client.post("/api/undo", headers=auth(token))
    app.state.api.close()
    assert not (campaign.directory / "journals" / "carol.jsonl").exists()
    out = tmp_path / "prefs.jsonl"
    assert main(["label", "--pairs", str(tmp_path / "pairs.jsonl"), "--annotations",
                 str(campaign.directory), "--out", str(out)]) == 0
    assert len(out.read_text().splitlines()) == 1  # alice's one answer
