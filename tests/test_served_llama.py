"""Served models against a real server: llama.cpp's OpenAI-compatible server
(``llama-cpp-python[server]``) serving the SmolLM2-135M-Instruct GGUF on 127.0.0.1.

Generation (4 prompts x 2 samples), judging with logprobs in both modes, a run killed
mid-way by killing the server and resumed, a server that is down and comes back, a bad key,
``evaluate`` after ``label`` answered from the cache, and REAL embeddings from
``/embeddings`` checked against the local embedding of the same model.

The server runs from its own virtual environment (``make test-served`` builds it; the first
build compiles llama.cpp). Without one these tests skip, unless
``REALSPO_REQUIRE_LLAMA_SERVER=1`` (set by ``make test-served``), which makes them fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from llama_server import KEY, KEY_ENV, LlamaServer, require_server_python
from realspo.cli import main

MODEL = "openai:smollm2"
OBVIOUS_PAIRS = Path(__file__).parent / "data" / "obvious_pairs.jsonl"


@pytest.fixture(scope="module")
def server(llama_server) -> LlamaServer:
    return llama_server


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """The reply journal shared by this module's runs (so later tests reuse earlier replies)."""
    return tmp_path_factory.mktemp("served-cache")


@pytest.fixture(autouse=True)
def key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def served(cache: Path, *extra: str) -> list[str]:
    return ["--api-key-env", KEY_ENV, "--served-cache", str(cache), *extra]


def journal_lines(cache: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(cache.glob("chat-*.jsonl"))
            for line in path.read_text().splitlines()]


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text


def expected_winners() -> list[str]:
    return [json.loads(line)["better"] for line in OBVIOUS_PAIRS.read_text().splitlines()]


def agreement(rows: list[dict]) -> int:
    """How many labelled pairs chose the sensible response."""
    pairs = {json.loads(line)["pair_id"]: json.loads(line) for line in OBVIOUS_PAIRS.read_text().splitlines()}
    return sum(row["chosen"] == pairs[row["pair_id"]]["response_" + pairs[row["pair_id"]]["better"].lower()]
               for row in rows)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_generate_4_prompts_2_samples_through_the_server(server, cache, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in [
        {"prompt": "What is the capital of France?"},
        {"prompt": [{"role": "user", "content": "Name a fruit."}]},
        {"prompt": "\n\nHuman: Say hello.\n\nAssistant:"},
        {"prompt": "Count to three."}]))
    out = tmp_path / "candidates.jsonl"
    args = ["generate", "--model", MODEL, "--base-url", server.base_url, "--prompts", str(prompts),
            "--out", str(out), "--num-responses", "2", "--max-new-tokens", "12", "--concurrency",
            "2", "--no-progress", *served(cache)]
    assert main(args) == 0
    printed = capsys.readouterr()
    rows = read_jsonl(out)
    assert [len(r["responses"]) for r in rows] == [2, 2, 2, 2]
    assert all(isinstance(t, str) and t for r in rows for t in r["responses"])
    assert sum(r["responses"][0] != r["responses"][1] for r in rows) >= 3  # seeds differ per sample
    replies = [entry["reply"] for entry in journal_lines(cache)]
    assert len(replies) == 8
    cut = {c["message"]["content"] for r in replies for c in r["choices"] if c["finish_reason"] == "length"}
    flags = {t: f for r in rows for t, f in zip(r["responses"], r["finished"], strict=True)}
    assert {t for t, f in flags.items() if not f} == cut & set(flags)  # finish_reason -> finished
    assert "8 requests sent" in printed.out and " completion" in printed.out
    completion = int(printed.out.split(" prompt, ")[1].split(" completion")[0])
    assert 0 < completion <= 8 * 12
    assert_no_key(printed.out, printed.err, out.read_text(), *(p.read_text() for p in cache.iterdir()))
    # a rerun asks nothing again and writes the same rows
    assert main([*args, "--overwrite"]) == 0
    assert "0 requests sent" in capsys.readouterr().out and read_jsonl(out) == rows


def _label(pairs: Path, out: Path, server: LlamaServer, cache: Path, *extra: str) -> list[str]:
    return ["label", "--pairs", str(pairs), "--out", str(out), "--judge", MODEL,
            "--judge-base-url", server.base_url, *served(cache, *extra)]


def test_a_killed_run_resumes_without_asking_again(server, cache, tmp_path, capsys):
    """Pointwise grading: the server is killed mid-run (the run fails, one line, nothing written
    but the journal), started again, and the rerun sends only what is missing."""
    out = tmp_path / "labels.jsonl"
    before = len(journal_lines(cache))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.Popen([sys.executable, "-m", "realspo.cli", *_label(
        OBVIOUS_PAIRS, out, server, cache, "--judge-mode", "pointwise", "--concurrency", "1",
        "--max-retries", "1")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 600
    while len(journal_lines(cache)) - before < 3 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    server.stop(kill=True)
    _, err = run.communicate(timeout=300)
    journaled = len(journal_lines(cache)) - before
    assert run.returncode == 2 and 3 <= journaled < 12
    assert sum("server unreachable" in line for line in err.splitlines()) == 1
    assert not out.exists()
    server.start()
    assert main(_label(OBVIOUS_PAIRS, out, server, cache, "--judge-mode", "pointwise")) == 0
    printed = capsys.readouterr().out
    assert f"judge requests: {12 - journaled} sent, {journaled} from the cache" in printed
    assert len(journal_lines(cache)) - before == 12 and read_jsonl(out)
    print(f"\nkilled after {journaled} of 12 replies; resumed: {printed.strip()}")


def test_pointwise_grading_agrees_with_obvious_pairs_where_pairwise_ties(server, cache, tmp_path, capsys):
    """Pairwise judging reads the verdict from top_logprobs, in both orders; pointwise grading
    ranks the sensible answer first more often (SmolLM2 favours a position)."""
    pointwise, pairwise = tmp_path / "pointwise.jsonl", tmp_path / "pairwise.jsonl"
    assert main(_label(OBVIOUS_PAIRS, pointwise, server, cache, "--judge-mode", "pointwise")) == 0
    assert "no position bias by construction" in capsys.readouterr().out
    before = len(journal_lines(cache))
    code = main(_label(OBVIOUS_PAIRS, pairwise, server, cache))
    printed = capsys.readouterr()
    assert "position-bias rate" in printed.out + printed.err
    replies = [e["reply"] for e in journal_lines(cache)[before:]]
    assert len(replies) == 12  # 6 pairs, both orders
    assert all(r["choices"][0]["logprobs"]["content"][0]["top_logprobs"] for r in replies)
    pairwise_agree = agreement(read_jsonl(pairwise)) if code == 0 else 0  # all ties: nothing written
    pointwise_agree = agreement(read_jsonl(pointwise))
    print(f"\nSmolLM2 served: pointwise agrees on {pointwise_agree} of 6, pairwise on "
          f"{pairwise_agree}; {(printed.out + printed.err).strip()}")
    assert pointwise_agree >= 5 and pointwise_agree > pairwise_agree


def test_evaluate_then_label_of_the_same_pairs_sends_nothing_new(server, tmp_path, tiny_model_dir,
                                                                smollm2_dir, capsys):
    """``evaluate`` judges 2 prompts in both orders (4 requests); ``label`` of the same pairs
    then sends none with the shared cache, and 4 with an empty one."""
    cache, fresh = tmp_path / "cache", tmp_path / "fresh-cache"
    texts = ["Name a colour.", "Name an animal."]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    result = tmp_path / "eval.json"
    assert main(["evaluate", "--model", smollm2_dir, "--baseline", tiny_model_dir, "--prompts",
                 str(prompts), "--judge", MODEL, "--judge-base-url", server.base_url,
                 "--max-new-tokens", "4", "--out", str(result), "--no-progress",
                 *served(cache)]) == 0
    assert "4 judge requests sent" in capsys.readouterr().out
    per_prompt = json.loads(result.read_text())["per_prompt"]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"pair_id": str(i), "prompt": t, "response_a": row["trained_response"],
                                         "response_b": row["baseline_response"]}) + "\n"
                             for i, (t, row) in enumerate(zip(texts, per_prompt, strict=True))))
    main(_label(pairs, tmp_path / "labels.jsonl", server, cache))
    printed = capsys.readouterr()  # all ties write nothing (exit 2); the count is printed either way
    assert "judge requests: 0 sent, 4 from the cache" in printed.out + printed.err
    main(_label(pairs, tmp_path / "labels-fresh.jsonl", server, fresh))
    printed = capsys.readouterr()
    assert "judge requests: 4 sent, 0 from the cache" in printed.out + printed.err


def test_a_server_that_comes_back_within_the_retries_is_waited_for(server, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say yes."}\n')
    out = tmp_path / "out.jsonl"
    server.stop()
    restart = threading.Timer(2.0, server.start)
    restart.start()
    try:
        code = main(["generate", "--model", MODEL, "--base-url", server.base_url, "--prompts",
                     str(prompts), "--out", str(out), "--num-responses", "2", "--max-new-tokens",
                     "4", "--max-retries", "10", "--no-progress", *served(tmp_path / "cache")])
    finally:
        restart.join()
    assert code == 0 and len(read_jsonl(out)[0]["responses"]) == 2


def test_a_server_that_stays_down_is_one_line_exit_2_nothing_written(server, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "Say yes."}\n')
    out = tmp_path / "out.jsonl"
    server.stop()
    try:
        code = main(["generate", "--model", MODEL, "--base-url", server.base_url, "--prompts",
                     str(prompts), "--out", str(out), "--max-retries", "1", "--no-progress",
                     *served(tmp_path / "cache")])
    finally:
        server.start()
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "server unreachable after 1 retries" in err
    assert not out.exists() and not list((tmp_path / "cache").glob("*.jsonl"))


def test_a_wrong_key_is_one_line_exit_2_before_any_judging(server, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(KEY_ENV, "not-the-key")
    out = tmp_path / "labels.jsonl"
    code = main(_label(OBVIOUS_PAIRS, out, server, tmp_path / "cache"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "refused the API key (401)" in err
    assert "not-the-key" not in err and not out.exists()


@pytest.fixture(scope="module")
def embedding_server(smollm2_gguf, tmp_path_factory):
    log = tmp_path_factory.mktemp("llama-embed") / "server.log"
    running = LlamaServer(require_server_python(), smollm2_gguf, embedding=True, log=log).start()
    yield running
    running.stop()


def test_select_reads_real_embeddings_from_the_server(embedding_server, smollm2_dir, tmp_path, capsys):
    from realspo.embeddings.embed import embed_with_causal_lm, load_embeddings
    from realspo.models import load_model, load_tokenizer

    data = tmp_path / "candidates.jsonl"
    groups = [["Paris is the capital of France.", "The capital is Paris.", "Bananas are yellow."],
              ["2 + 2 = 4.", "Four.", "Purple elephants dance."]]
    data.write_text("".join(json.dumps({"prompt": p, "responses": r}) + "\n"
                            for p, r in zip(["Capital of France?", "2 + 2?"], groups, strict=True)))
    saved, cache = tmp_path / "emb.npy", tmp_path / "cache"
    args = ["select", "--data", str(data), "--embedder", MODEL, "--base-url", embedding_server.base_url,
            "--out", str(tmp_path / "pairs.jsonl"), "--save-embeddings", str(saved),
            "--served-cache", str(cache), "--no-progress"]
    assert main(args) == 0
    served_rows = load_embeddings(str(saved), 6)
    tokenizer = load_tokenizer(smollm2_dir)
    local = embed_with_causal_lm(load_model(smollm2_dir, "base"), tokenizer,
                                 [t for g in groups for t in g], show_progress=False)
    cosines = (served_rows * local).sum(axis=1)
    assert np.all(cosines > 0.99), cosines  # the same REAL embedding, Q4_1 on llama.cpp vs fp32
    capsys.readouterr()
    assert main([*args, "--overwrite", "--dry-run"]) == 0
    assert "would send 0 request(s); 6 already cached" in capsys.readouterr().out
