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


# --- 2. a second invert into the same folder keeps the first one's records ---------------------------------

SG2 = golden_dir("generators", "sg2_64.pkl")
PROJECT = ["-m", "optimize", "-n", SG2, "--no-align", "--project-steps", 1, "--set", "lpips_random_backbone=true",
           "--set", "projector.w_avg_samples=64", "--device", "cpu"]


def _photo(path, seed):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.RandomState(seed).randint(0, 256, (64, 64, 3), np.uint8)).save(path)
    return path


def test_inverting_more_photos_into_a_folder_adds_to_its_records(tmp_path):
    from sgtool.latents import load_npy

    out = tmp_path / "inv"
    first = sgtool("invert", _photo(tmp_path / "a.png", 0), "-o", out, *PROJECT)
    second = sgtool("invert", _photo(tmp_path / "b.png", 1), "-o", out, *PROJECT, "--json")
    assert first.exit_code == 0 and second.exit_code == 0, second.output
    record = json.loads((out / "invert.json").read_text())
    assert [item["name"] for item in record["items"]] == ["a", "b"] and record["kept_from_earlier_runs"] == 1
    assert sorted(load_npy(out / "latents.npy")) == ["a.png", "b.png"]
    assert json.loads(second.stdout)["counts"]["ok"] == 1  # the run's own counts
    # Another schedule would mix latents of two recipes in one record: refused, nothing written.
    before = (out / "invert.json").read_bytes()
    other = sgtool("invert", _photo(tmp_path / "c.png", 2), "-o", out, *PROJECT, "--set", "seed=7")
    assert other.exit_code == 2 and "records outputs made with other settings (seed 0 there, 7 now)" in \
        " ".join(other.stderr.split())
    assert (out / "invert.json").read_bytes() == before and not (out / "c_latent.npy").exists()
    # A photo of the same name from another folder would overwrite a.png's latent: refused too.
    clash = sgtool("invert", _photo(tmp_path / "other" / "a.png", 3), "-o", out, *PROJECT)
    assert clash.exit_code == 2 and "would write over the outputs of" in " ".join(clash.stderr.split())


# --- 6. `invert ALIGN_FOLDER --no-align` inverts the aligned faces, not the unaligned crops -----------------


def test_inverting_an_align_folder_leaves_out_its_unaligned_crops(tmp_path):
    from sgtool.demo import SAMPLE

    aligned = sgtool("align", SAMPLE, "--size", 64, "-o", tmp_path / "al")
    assert aligned.exit_code == 0, aligned.output
    assert sorted(p.name for p in (tmp_path / "al").glob("*.png")) == ["astronaut_face0_aligned.png",
                                                                        "astronaut_face0_crop.png"]
    result = sgtool("invert", tmp_path / "al", "-o", tmp_path / "inv", *PROJECT, "--json")
    assert result.exit_code == 0, result.output
    assert [item["name"] for item in json.loads(result.stdout)["items"]] == ["astronaut_face0_aligned"]
    assert "left out 1 unaligned crop(s)" in result.stderr
