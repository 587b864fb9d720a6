"""Installing realspo prints no warning: setuptools reads ``pyproject.toml`` without one.

``pip install -e .`` runs setuptools' ``pyproject.toml`` reading (three times); a deprecated
form (the license as a ``{text = ...}`` table) warns each time. Reading the configuration
with warnings turned into errors, in a fresh interpreter, checks the same thing in half a
second.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

READ_CONFIG = """
import warnings
warnings.simplefilter("error")
from setuptools.dist import Distribution
from setuptools.config.pyprojecttoml import apply_configuration
dist = apply_configuration(Distribution(), "pyproject.toml")
print(dist.get_name(), dist.metadata.license_expression)
"""


def test_setuptools_reads_the_project_config_without_a_warning():
    proc = subprocess.run([sys.executable, "-W", "error", "-c", READ_CONFIG], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr.strip().splitlines()[-1:]
    assert proc.stdout.split() == ["realspo", "Apache-2.0"]
    assert proc.stderr == ""


def test_the_license_is_an_spdx_string_and_the_build_needs_a_setuptools_that_reads_it():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    # the SPDX string form needs setuptools 77 or newer (older ones reject it)
    assert "setuptools>=77" in project["build-system"]["requires"]
