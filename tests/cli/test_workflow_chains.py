"""The flows that chain commands, and what a batch job meets between them (one regression test per chain)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from support.golden import golden_dir
from sgtool.cli import app
from sgtool.models import load_generator

runner = CliRunner()


def sgtool(*args):
    return runner.invoke(app, [str(a) for a in args])


# --- 9. `info --arch` on a bare state dict it reads without one -------------------------------------------


@pytest.mark.parametrize("name,arch,other", [("sg3r_64", "stylegan3-r", "stylegan3-t"),
                                             ("sg3t_64", "stylegan3-t", "stylegan3-r"),
                                             ("sg2_64", "stylegan2", "stylegan3-t")])
def test_info_with_the_right_arch_reads_a_narrow_state_dict_and_the_wrong_one_says_which(name, arch, other, tmp_path):
    G = load_generator(golden_dir("generators", f"{name}.pkl"))
    torch.save(G.state_dict(), tmp_path / "G.pt")  # channels far below the released presets
    plain = sgtool("info", tmp_path / "G.pt", "--json")
    given = sgtool("info", tmp_path / "G.pt", "--arch", arch, "--json")
    assert plain.exit_code == 0 and given.exit_code == 0, given.output
    assert json.loads(given.stdout)["init_kwargs"] == json.loads(plain.stdout)["init_kwargs"]
    wrong = sgtool("info", tmp_path / "G.pt", "--arch", other)
    assert wrong.exit_code == 2 and "drop --arch" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
