"""The served-model client without a server process: the faults a real server will not
produce on demand (429 with Retry-After, 5xx, a non-JSON body, a key echoed back), the
journal, the request budget, the dry run, reading verdicts from replies, and bad options.

The fake server is an ``httpx.MockTransport`` handed to the ``openai`` client; everything
else (retries, backoff, error classes) is the real library. The main tests run against
llama.cpp's real server: tests/test_served_llama.py.
"""

from __future__ import annotations

import json
import math

import httpx
import numpy as np
import pytest

from realspo.cli import main
from realspo.errors import ConfigError, RealspoError
from realspo.labels.judge_prompts import POINTWISE
from realspo.labels.pairwise import Comparison, GradedComparison
from realspo.labels.served_judge import ServedJudge, p_first_answer
from realspo.served.client import BudgetSpent, DryRun, ServedClient, mean_of_tokens
from realspo.served.journal import ReplyJournal, request_key
from realspo.served.options import ServedOptions

URL = "http://fake.test/v1"


def chat_reply(content: str = "A", top: dict[str, float] | None = None,
               finish: str = "stop") -> dict:
    logprobs = None
    if top is not None:
        listed = [{"token": t, "logprob": lp, "bytes": None} for t, lp in top.items()]
        logprobs = {"content": [{"token": content, "logprob": -0.1, "bytes": None,
                                 "top_logprobs": listed}]}
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                         "logprobs": logprobs, "finish_reason": finish}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


class FakeServer:
    """Answers each request with the next of ``answers`` (a status code, an httpx.Response, or
    a reply dict), repeating the last; records the requests."""

    def __init__(self, *answers) -> None:
        self.answers, self.requests = list(answers), []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        if isinstance(answer, httpx.Response):
            return answer
        if isinstance(answer, int):
            return httpx.Response(answer, json={"error": {"message": f"status {answer}"}})
        return httpx.Response(200, json=answer)

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


@pytest.fixture
def sleeps(monkeypatch):
    """The backoff sleeps the openai library would take (recorded, not slept)."""
    import openai._base_client as base

    taken: list[float] = []
    monkeypatch.setattr(base.time, "sleep", taken.append)
    return taken


def options(tmp_path, **changes) -> ServedOptions:
    return ServedOptions(**{"base_url": URL, "max_retries": 3, "timeout": 5.0, "concurrency": 2,
                            "cache_dir": str(tmp_path / "cache"), **changes})


def test_429_is_retried_after_the_seconds_retry_after_names(tmp_path, sleeps):
    server = FakeServer(httpx.Response(429, headers={"retry-after": "3"}, json={}), chat_reply("ok"))
    reply = ServedClient("m", options(tmp_path), server.client()).chat({"messages": []})
    assert reply["choices"][0]["message"]["content"] == "ok"
    assert len(server.requests) == 2
    assert sleeps == [3.0]


def test_5xx_is_retried_with_growing_backoff_until_max_retries(tmp_path, sleeps):
    server = FakeServer(503)
    client = ServedClient("m", options(tmp_path, max_retries=3), server.client())
    with pytest.raises(RealspoError, match=r"answered 503 after 3 retries"):
        client.chat({"messages": []})
    assert len(server.requests) == 4  # the first try and three retries
    assert sleeps[0] < sleeps[-1]  # exponential backoff (with jitter)


@pytest.mark.parametrize("status, words", [(401, "refused the API key"), (403, "not allowed"),
                                           (404, "no model 'm' there, or a wrong base URL")])
def test_401_403_404_are_one_line_at_the_first_request_without_retries(tmp_path, sleeps, status, words):
    server = FakeServer(status)
    with pytest.raises(RealspoError, match=words) as caught:
        ServedClient("m", options(tmp_path), server.client()).chat({"messages": []})
    assert len(server.requests) == 1 and "\n" not in str(caught.value)


def test_the_key_never_appears_in_an_error_even_when_the_server_echoes_it(tmp_path, monkeypatch, sleeps):
    monkeypatch.setenv("MY_KEY", "sk-very-secret-42")
    server = FakeServer(httpx.Response(401, json={"error": {"message": "bad key sk-very-secret-42"}}))
    with pytest.raises(RealspoError) as caught:
        ServedClient("m", options(tmp_path, api_key_env="MY_KEY"), server.client()).chat({"messages": []})
    assert "sk-very-secret-42" not in str(caught.value) and "***" in str(caught.value)
    assert server.requests[0].headers["authorization"] == "Bearer sk-very-secret-42"


@pytest.mark.parametrize("body", [httpx.Response(200, text="<html>hello</html>",
                                                 headers={"content-type": "text/html"}),
                                  httpx.Response(200, json={"result": "something else"})])
def test_a_reply_that_is_not_chat_completions_json_is_one_line(tmp_path, body):
    server = FakeServer(body)
    with pytest.raises(RealspoError, match="not chat-completions JSON"):
        ServedClient("m", options(tmp_path), server.client()).chat({"messages": []})


def test_journal_drops_a_torn_last_line_and_keeps_the_rest(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = ReplyJournal(path)
    journal.add("k1", {"v": 1})
    with path.open("a") as fh:
        fh.write('{"key": "k2", "reply": {"v"')  # a kill mid-write
    again = ReplyJournal(path)
    assert "k1" in again and "k2" not in again and again.get("k1") == {"v": 1}
    assert path.read_text().endswith("}\n")


def test_request_key_changes_with_every_field_and_not_with_their_order():
    base = request_key(model="m", base_url=URL, text="a")
    assert base == request_key(text="a", base_url=URL, model="m")
    assert len({base, request_key(model="n", base_url=URL, text="a"),
                request_key(model="m", base_url=URL + "/x", text="a"),
                request_key(model="m", base_url=URL, text="b")}) == 4


def _requests(n: int) -> list[tuple[str, dict]]:
    return [(f"k{i}", {"messages": [{"role": "user", "content": str(i)}]}) for i in range(n)]


def test_send_all_asks_only_for_what_the_journal_lacks(tmp_path):
    server = FakeServer(chat_reply("x"))
    client = ServedClient("m", options(tmp_path), server.client())
    journal = client.journal("chat")
    journal.add("k0", chat_reply("cached"))
    replies = client.send_all(journal, _requests(5), client.chat, progress=False)
    assert len(server.requests) == 4 and client.sent == 4
    assert replies["k0"]["choices"][0]["message"]["content"] == "cached"
    assert len(ReplyJournal(journal.path)) == 5  # every reply journaled as it came


def test_max_requests_stops_cleanly_and_a_rerun_continues(tmp_path):
    server = FakeServer(chat_reply("x"))
    client = ServedClient("m", options(tmp_path, max_requests=2), server.client())
    with pytest.raises(BudgetSpent, match="stopped at --max-requests 2: 3 of 5"):
        client.send_all(client.journal("chat"), _requests(5), client.chat, progress=False)
    assert len(server.requests) == 2
    rerun = ServedClient("m", options(tmp_path), server.client())
    rerun.send_all(rerun.journal("chat"), _requests(5), rerun.chat, progress=False)
    assert rerun.sent == 3 and len(server.requests) == 5


def test_dry_run_counts_and_sends_nothing(tmp_path):
    server = FakeServer(chat_reply("x"))
    client = ServedClient("m", options(tmp_path, dry_run=True), server.client())
    journal = client.journal("chat")
    journal.add("k1", chat_reply("cached"))
    with pytest.raises(DryRun) as plan:
        client.send_all(journal, _requests(4), client.chat, progress=False)
    assert (plan.value.to_send, plan.value.cached) == (3, 1) and not server.requests


def test_a_failed_request_stops_the_pool_and_keeps_the_replies_received(tmp_path, sleeps):
    server = FakeServer(chat_reply("a"), chat_reply("b"), 401)
    client = ServedClient("m", options(tmp_path, concurrency=1), server.client())
    journal = client.journal("chat")
    with pytest.raises(RealspoError, match="401"):
        client.send_all(journal, _requests(6), client.chat, progress=False)
    assert len(ReplyJournal(journal.path)) == 2 and len(server.requests) == 3


def test_verdict_from_top_logprobs_sums_the_spellings_of_each_answer():
    p = p_first_answer(chat_reply("A", {"A": math.log(0.5), " A": math.log(0.1), "B": math.log(0.2),
                                        "The": math.log(0.1)}), ("A", "B"))
    assert p == pytest.approx(0.6 / 0.8)


def test_verdict_bounds_an_unlisted_answer_by_the_smallest_listed_probability():
    p = p_first_answer(chat_reply("Yes", {"Yes": math.log(0.9), "I": math.log(0.05)}), ("Yes", "No"))
    assert p == pytest.approx(0.9 / 0.95)


def test_verdict_without_logprobs_is_read_from_the_first_word():
    assert p_first_answer(chat_reply("Response B is better."), ("A", "B")) == 0.0
    assert p_first_answer(chat_reply("yes, it is"), ("Yes", "No")) == 1.0
    assert math.isnan(p_first_answer(chat_reply("I cannot decide."), ("A", "B")))


def test_an_unparseable_pair_is_counted_apart_never_a_tie():
    verdicts = Comparison(np.array([[0.9, 0.8], [np.nan, 0.7], [0.8, 0.3]]))
    assert verdicts.outcomes == ["A", "unparseable", "tie"]
    assert verdicts.position_bias_rate == 0.5  # 1 of the 2 parseable pairs
    assert "1 unparseable" in verdicts.bias_summary()


def test_pointwise_prefers_the_higher_grade_and_ties_within_the_margin():
    graded = GradedComparison(np.array([[0.9, 0.2], [0.40, 0.45], [0.1, 0.6], [np.nan, 0.3]]), 0.1)
    assert graded.outcomes == ["A", "tie", "B", "unparseable"]
    assert graded.position_bias_rate == 0.0 and not graded.disagree.any()
    assert graded.p_a[0] == pytest.approx(0.85)


def test_served_pointwise_judge_grades_each_response_alone_and_caches(tmp_path):
    yes, no = chat_reply("Yes", {"Yes": math.log(0.8), "No": math.log(0.2)}), \
        chat_reply("No", {"Yes": math.log(0.1), "No": math.log(0.9)})
    server = FakeServer(yes, no)
    judge = ServedJudge("m", options(tmp_path, concurrency=1), mode=POINTWISE, progress=False,
                        http_client=server.client())
    graded = judge.compare(["Q?"], ["good"], ["bad"])
    assert graded.outcomes == ["A"] and graded.grades.round(2).tolist() == [[0.8, 0.1]]
    sent = [json.loads(r.content)["messages"][0]["content"] for r in server.requests]
    assert "good" in sent[0] and "bad" not in sent[0] and "bad" in sent[1]
    again = ServedJudge("m", options(tmp_path), mode=POINTWISE, progress=False,
                        http_client=server.client())
    again.compare(["Q?"], ["good"], ["bad"])
    assert again.requests_summary() == "judge requests: 0 sent, 2 from the cache"


def test_a_vector_per_token_is_mean_pooled():
    assert mean_of_tokens([[1.0, 2.0], [3.0, 6.0]]) == [2.0, 4.0]
    assert mean_of_tokens([0.5, 1.5]) == [0.5, 1.5]


def _prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "Hi?"}\n')
    return str(path)


@pytest.mark.parametrize("extra, message", [
    (["--model", "openai:", "--base-url", URL], "expected openai:NAME"),
    (["--model", "openai:m", "--base-url", "localhost:8000"], "expected an http:// or https:// URL"),
    (["--model", "openai:m"], "--base-url is required"),
    (["--model", "openai:m", "--base-url", URL, "--concurrency", "0"], "--concurrency must be at least 1"),
    (["--model", "openai:m", "--base-url", URL, "--timeout", "0"], "--timeout must be > 0"),
    (["--model", "/some/model", "--base-url", URL], "--base-url has no effect without --model openai:NAME"),
    (["--model", "/some/model", "--concurrency", "3"], "--concurrency has no effect"),
    (["--model", "openai:m", "--base-url", URL, "--top-k", "5"], "--top-k is not an OpenAI API parameter"),
    (["--model", "openai:m", "--base-url", URL, "--chat-template", "off"], "--chat-template has no effect"),
])
def test_bad_served_options_are_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, extra,
                                                                 message):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    out = tmp_path / "out.jsonl"
    code = main(["generate", "--prompts", _prompts(tmp_path), "--out", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_a_judge_template_without_both_response_slots_is_refused(tmp_path, capsys):
    template = tmp_path / "t.txt"
    template.write_text("Is {prompt} answered by {response_a}? Answer A or B.")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"pair_id": "1", "prompt": "p", "response_a": "a",
                                 "response_b": "b"}) + "\n")
    code = main(["label", "--pairs", str(pairs), "--out", str(tmp_path / "o.jsonl"),
                 "--judge", "openai:m", "--judge-base-url", URL, "--judge-template", str(template),
                 "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "missing placeholder {response_b}" in err and len(err.splitlines()) == 1


def test_pointwise_template_must_use_prompt_and_response(tmp_path):
    from realspo.labels.judge_prompts import check_template

    with pytest.raises(RealspoError, match=r"missing placeholder \{response\}"):
        check_template("{prompt} {response_a}", "t.txt", POINTWISE.placeholders)


def test_label_dry_run_prints_the_count_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "o.jsonl"
    code = main(["label", "--pairs", "tests/data/obvious_pairs.jsonl", "--out", str(out),
                 "--judge", "openai:m", "--judge-base-url", URL, "--judge-mode", "pointwise",
                 "--served-cache", str(tmp_path / "cache"), "--dry-run"])
    assert code == 0 and "would send 12 request(s); 0 already cached" in capsys.readouterr().out
    assert not out.exists()


def test_tie_margin_needs_pointwise_mode():
    from realspo.commands.label import LabelConfig

    with pytest.raises(ConfigError, match="--tie-margin has no effect"):
        LabelConfig(pairs="p", out="o", judge="openai:m", judge_base_url=URL, tie_margin=0.1).validate()
