"""The whole pipeline on a real chat model: SmolLM2-135M-Instruct (Llama, BPE, ChatML).

generate (2 prompts x 2) -> select -> label with the LLM judge -> label through the
annotation round trip -> train 2 LoRA steps with SPO -> evaluate with the LLM judge, each
through the real CLI. About a minute on 2 cores (the README's "Real models" section gives
each stage's time).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from realspo.cli import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

PROMPTS = [
    {"prompt": "What is the capital of France?"},
    {"prompt": [{"role": "user", "content": "Name a fruit that is yellow."}]},
]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_every_stage_runs_on_smollm2(smollm2_dir, tmp_path, capsys):
    model, judge = smollm2_dir, f"llm:{smollm2_dir}"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")

    # 1. generate: the chat template is used, and cut responses are marked
    code, out, _ = _run(capsys, "generate", "--model", model, "--prompts", prompts,
                        "--num-responses", 2, "--max-new-tokens", 24, "--no-progress",
                        "--out", tmp_path / "cands.jsonl")
    assert code == 0
    cands = _jsonl(tmp_path / "cands.jsonl")
    assert len(cands) == 2 and all(len(c["responses"]) == 2 for c in cands)
    assert all(isinstance(f, bool) for c in cands for f in c["finished"])
    assert f"{sum(not f for c in cands for f in c['finished'])} of 4 cut" in out

    # 2. select: REAL's easy pair per prompt, embedded by the model itself; flags carried
    code, _, _ = _run(capsys, "select", "--data", tmp_path / "cands.jsonl", "--model", model,
                      "--strategy", "easy", "--no-progress", "--out", tmp_path / "pairs.jsonl")
    assert code == 0
    pairs = _jsonl(tmp_path / "pairs.jsonl")
    assert len(pairs) == 2 and all({"finished_a", "finished_b"} <= set(p) for p in pairs)

    # 3. the LLM judge labels both orders and reports its position bias. SmolLM2-135M
    # prefers whichever response it is shown first, so its two orders may disagree on every
    # pair: then every pair is a tie and nothing is written (exit 2, one line).
    code, out, err = _run(capsys, "label", "--pairs", tmp_path / "pairs.jsonl", "--judge", judge,
                          "--out", tmp_path / "judged.jsonl")
    assert "position-bias rate" in out + err
    if code == 0:
        assert _jsonl(tmp_path / "judged.jsonl")[0]["label_source"] == "llm-judge"
    else:
        # found after the judge's work (its progress bars), so the error is the last line
        assert code == 2 and err.strip().splitlines()[-1].startswith("realspo label: error:")
        assert not (tmp_path / "judged.jsonl").exists()

    # 4. people label instead: the tasks show the model's default system prompt
    code, _, _ = _run(capsys, "label", "--pairs", tmp_path / "pairs.jsonl", "--export-tasks",
                      tmp_path / "tasks.csv", "--model", model)
    assert code == 0
    with open(tmp_path / "tasks.csv", newline="", encoding="utf-8") as fh:
        tasks = list(csv.DictReader(fh))
    assert all(t["prompt"].startswith("System: ") for t in tasks)
    for t in tasks:
        t["answer"] = "A"
    with open(tmp_path / "tasks.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(tasks[0]))
        writer.writeheader()
        writer.writerows(tasks)
    code, _, _ = _run(capsys, "label", "--pairs", tmp_path / "pairs.jsonl", "--annotations",
                      tmp_path / "tasks.csv", "--out", tmp_path / "prefs.jsonl")
    assert code == 0
    prefs = _jsonl(tmp_path / "prefs.jsonl")
    assert len(prefs) == 2 and all("chosen_finished" in p for p in prefs)

    # 5. train: 2 LoRA steps with SPO, at the LoRA default learning rate
    run = tmp_path / "run"
    code, _, err = _run(capsys, "train", "--data", tmp_path / "prefs.jsonl", "--model", model,
                        "--lora-r", 8, "--spo", "--max-steps", 2, "--batch-size", 2,
                        "--out", run)
    assert code == 0, err
    assert "lr 1e-4 (LoRA default" in err
    records = [r for r in _jsonl(run / "metrics.jsonl") if "loss" in r and "step" in r]
    assert [r["step"] for r in records][-1] == 2
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["spo/loss"]) for r in records)
    assert (run / "model.safetensors").exists() or any(run.glob("*.safetensors"))

    # 6. evaluate: trained vs SmolLM2, judged pairwise by the LLM judge in both orders
    code, _, err = _run(capsys, "evaluate", "--model", run, "--baseline", model, "--prompts",
                        prompts, "--judge", judge, "--max-new-tokens", 24, "--no-progress",
                        "--out", tmp_path / "eval.json")
    assert code == 0, err
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_prompts"] == 2
    if result["win_rate"] is None:  # the judge told no pair apart: no rate, and it says why
        assert result["ties"] == 2 and result["no_win_rate"] == "no decisive judgments (2 ties)"
    else:
        assert 0.0 <= result["win_rate"] <= 1.0
    assert 0.0 <= result["pairwise"]["position_bias_rate"] <= 1.0
