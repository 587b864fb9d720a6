"""Security defaults: no remote code unless asked, safetensors weights, no pickle from
user-supplied paths unless the user opts in with ``--allow-pickle``."""

from __future__ import annotations

import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest

import realspo
from realspo.cli import COMMANDS, main
from realspo.errors import InputError
from realspo.models import load_model, load_tokenizer

SRC = Path(realspo.__file__).parent


class _Stop(Exception):
    pass


def _record_kwargs(monkeypatch, target: object) -> dict:
    """Replace ``target.from_pretrained`` with one that records its kwargs and stops."""
    seen: dict = {}

    def fake(name, *args, **kwargs):
        seen.update(kwargs, name=name)
        raise _Stop

    monkeypatch.setattr(target, "from_pretrained", fake)
    return seen


@pytest.mark.parametrize("kind,auto", [("causal-lm", "AutoModelForCausalLM"), ("base", "AutoModel"),
                                       ("sequence-classifier", "AutoModelForSequenceClassification")])
def test_load_model_defaults_to_no_remote_code_and_safetensors_only(kind, auto, monkeypatch):
    import transformers

    seen = _record_kwargs(monkeypatch, getattr(transformers, auto))
    with pytest.raises(_Stop):
        load_model("some-org/some-model", kind)
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


def test_load_tokenizer_defaults_to_no_remote_code(monkeypatch):
    import transformers

    seen = _record_kwargs(monkeypatch, transformers.AutoTokenizer)
    with pytest.raises(_Stop):
        load_tokenizer("some-org/some-model")
    assert seen["trust_remote_code"] is False


def test_remote_code_is_passed_only_when_asked(monkeypatch):
    import transformers

    seen = _record_kwargs(monkeypatch, transformers.AutoModelForCausalLM)
    with pytest.raises(_Stop):
        load_model("some-org/some-model", trust_remote_code=True)
    assert seen["trust_remote_code"] is True


def _config_classes():
    for name, command in COMMANDS.items():
        module = importlib.import_module(f"realspo.commands.{command.module}")
        for value in vars(module).values():
            if dataclasses.is_dataclass(value) and value.__module__ == module.__name__:
                yield name, value
    from realspo.pipeline.select_config import SelectConfig
    from realspo.training.train_config import TrainConfig

    yield "train", TrainConfig
    yield "select", SelectConfig  # defined in pipeline/, beside the select pipeline


def test_every_command_option_that_opens_a_door_is_off_by_default():
    found = set()
    for command, cls in _config_classes():
        for f in dataclasses.fields(cls):
            if f.name in ("trust_remote_code", "allow_pickle"):
                assert f.default is False, (command, f.name)
                found.add((command, f.name))
    assert {c for c, n in found if n == "trust_remote_code"} >= {"generate", "select", "label",
                                                                  "train", "evaluate", "chat"}


def test_select_through_the_cli_loads_without_remote_code(monkeypatch, tmp_path, tiny_model_dir):
    import transformers

    seen = _record_kwargs(monkeypatch, transformers.AutoModel)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Q?", "responses": ["a", "b"]}) + "\n")
    with pytest.raises(_Stop):  # not a RealspoError: it propagates out of main
        main(["select", "--data", str(data), "--model", tiny_model_dir, "--out", str(tmp_path / "o.jsonl")])
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


# --- pickle ----------------------------------------------------------------------------------


def test_a_pickle_only_model_directory_is_refused_by_load_model(pickle_only_model_dir):
    with pytest.raises(InputError, match=r"only in pickle format \(\.bin\).*--allow-pickle"):
        load_model(pickle_only_model_dir)


def test_select_refuses_a_pickle_only_model_and_accepts_it_with_allow_pickle(
        pickle_only_model_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}?", "responses": ["Yes, gladly.", "No."],
                                        "scores": [1, 0]}) + "\n" for i in range(2)))
    argv = ["select", "--data", str(data), "--model", pickle_only_model_dir, "--no-progress",
            "--out", str(tmp_path / "pairs.jsonl")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert pickle_only_model_dir in err and "pickle" in err and not (tmp_path / "pairs.jsonl").exists()
    assert main([*argv, "--allow-pickle"]) == 0
    assert len((tmp_path / "pairs.jsonl").read_text().splitlines()) == 2


def test_a_pickle_only_sentence_transformer_is_refused(tmp_path, capsys):
    st = tmp_path / "st-model"
    (st / "0_Transformer").mkdir(parents=True)
    (st / "modules.json").write_text("[]")
    (st / "0_Transformer" / "pytorch_model.bin").write_bytes(b"not even read")
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "Q?", "responses": ["a", "b"]}) + "\n")
    assert main(["select", "--data", str(data), "--embedder", f"st:{st}", "--out",
                 str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert str(st) in err and "pickle" in err and "--allow-pickle" in err


@pytest.mark.parametrize("command", ["generate", "label", "evaluate", "train", "chat"])
def test_every_command_that_loads_a_model_refuses_a_pickle_only_directory(
        command, pickle_only_model_dir, tmp_path, capsys):
    from realspo.proving_ground.world import WorldConfig, build_world

    prompts = tmp_path / "prompts.jsonl"  # a question the proving-ground judge can score
    question = build_world(WorldConfig()).test_prompts[0]
    prompts.write_text(json.dumps({"prompt": question}) + "\n")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"pair_id": "a", "prompt": "Q?", "response_a": "x",
                                 "response_b": "y", "chosen": "x", "rejected": "y"}) + "\n")
    model, out = pickle_only_model_dir, str(tmp_path / "out" / "result")
    argv = {
        "generate": ["generate", "--model", model, "--prompts", str(prompts), "--out", out + ".jsonl"],
        "label": ["label", "--pairs", str(pairs), "--reward-model", model, "--out", out + ".jsonl"],
        "evaluate": ["evaluate", "--model", model, "--baseline", model, "--prompts", str(prompts),
                     "--judge", "proving-ground", "--out", out + ".json"],
        "train": ["train", "--data", str(pairs), "--model", model, "--out", out,
                  "--cache-dir", str(tmp_path / "cache")],
        "chat": ["chat", "--model", model],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert model in err and ("pickle" in err or "not a sequence classifier" in err)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --- no unsafe deserialisation anywhere in the package ----------------------------------------------


def _calls(pattern: str) -> list[tuple[str, int, str]]:
    """(file, line, text) of every match of ``pattern`` in the package's source."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(pattern, text):
            call = text[match.start():text.find(")", match.end()) + 1]
            found.append((str(path.relative_to(SRC)), text.count("\n", 0, match.start()) + 1, call))
    return found


def test_no_torch_load_without_weights_only():
    unsafe = [c for c in _calls(r"\btorch\.load\(") if "weights_only=True" not in c[2]]
    assert unsafe == []


def test_no_unpickling_loader_of_a_library():
    """accelerate's load_state, and torch's loader unless restricted to weights, unpickle."""
    assert _calls(r"\.load_state\(") == []
    assert _calls(r"weights_only\s*=\s*False") == []


def test_no_pickle_or_unsafe_yaml_loading():
    assert _calls(r"\b(c?[Pp]ickle|dill|joblib)\.loads?\(") == []
    assert _calls(r"\byaml\.(load|unsafe_load|full_load)\(") == []


def test_every_np_load_refuses_pickles():
    calls = _calls(r"\bnp\.load\(")
    assert calls and all("allow_pickle=False" in c[2] for c in calls), calls


def test_remote_code_is_never_switched_on_in_the_source():
    assert _calls(r"trust_remote_code\s*=\s*True") == []


# --- train --resume reads no pickle -------------------------------------------------------------

CHECKPOINT_FILES = ["model.safetensors", "optimizer.json", "optimizer.safetensors", "rng_state_0.json",
                    "rng_state_0.safetensors", "scheduler.json", "trainer_state.json"]
OLD_PICKLE_NAMES = ["custom_checkpoint_0.pkl", "random_states_0.pkl", "optimizer.bin"]


class _Planted:
    """Unpickling this runs ``exec(code)``, as a hostile checkpoint file would (a ``torch.save``
    file is a zip around such a pickle, unpickled the same way)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


@pytest.fixture(scope="module")
def checkpointed_run(tiny_model_dir, tmp_path_factory):
    """A finished run with a checkpoint at step 2, and the argv that trained it."""
    root = tmp_path_factory.mktemp("checkpointed")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Q{i}?", "chosen": "Yes, gladly.",
                                         "rejected": "No."}) + "\n" for i in range(4)))
    out = root / "run"
    argv = ["train", "--data", str(pairs), "--model", tiny_model_dir, "--out", str(out),
            "--cache-dir", str(root / "cache"), "--batch-size", "2", "--max-length", "32",
            "--max-steps", "2", "--save-steps", "2"]
    assert main(argv) == 0
    checkpoint = out / "checkpoints" / "step-000002"
    assert sorted(p.name for p in checkpoint.iterdir()) == CHECKPOINT_FILES
    return out, argv


@pytest.mark.parametrize("planted", [*CHECKPOINT_FILES, *OLD_PICKLE_NAMES])
def test_a_pickle_planted_in_a_checkpoint_is_refused_and_never_run(
        planted, checkpointed_run, tmp_path, capsys):
    import pickle
    import shutil

    source, argv = checkpointed_run
    out = tmp_path / "run"
    shutil.copytree(source, out)
    marker = tmp_path / "pwned"
    target = out / "checkpoints" / "step-000002" / planted
    payload = pickle.dumps({"state": _Planted(f"open({str(marker)!r}, 'w').write('ran')")})
    pickle.loads(payload)  # the payload is live: unpickling it (as the old resume did) runs the code
    assert marker.exists()
    marker.unlink()
    target.write_bytes(payload)
    capsys.readouterr()

    code = main([*[str(out) if a == str(source) else a for a in argv], "--resume"])
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert f"{target}: not a valid realspo checkpoint file (" in err
