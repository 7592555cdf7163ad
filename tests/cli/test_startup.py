"""Start-up cost: help and version never import torch, numpy or a pipeline (they take a fraction of a second)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "numpy", "scipy", "cv2", "mediapipe", "sgtool.pipelines", "sgtool.models")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["edit", "--help"], ["directions", "sefa", "--help"],
                                  ["models", "--help"]])
def test_help_and_version_import_nothing_heavy(args):
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "sgtool", *args], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    heavy = sorted(name for name in imported if name.split(".")[0] in HEAVY or name.startswith(HEAVY))
    assert not heavy, f"`sgtool {' '.join(args)}` imported {heavy[:5]}"
