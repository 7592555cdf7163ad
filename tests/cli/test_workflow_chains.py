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


# --- 1. invert PHOTO, then tune PHOTO --latents: each pivot is tuned against the face it came from ---------

SG3 = golden_dir("generators", "sg3t_64.pkl")
FAST = ["--set", "lpips_random_backbone=true", "--device", "cpu"]


@pytest.mark.parametrize("width", [512, 640])  # a square photo and a wide one (refused before: "not square")
def test_readme_flow_tunes_the_pivot_against_its_face(width, tmp_path):
    from PIL import Image

    from sgtool.demo import SAMPLE
    from sgtool.pipelines.align import align_image
    from sgtool.pipelines.shared.images import generator_target, read_image
    from sgtool.pipelines.shared.render import synthesize

    photo = tmp_path / "photo.png"
    sample = np.asarray(Image.open(SAMPLE).convert("RGB"))
    canvas = np.full((512, width, 3), 127, np.uint8)
    canvas[:, (width - 512) // 2:(width - 512) // 2 + 512] = sample
    Image.fromarray(canvas).save(photo)
    inverted = sgtool("invert", photo, "-m", "optimize", "-n", SG3, "--project-steps", 2, "-o", tmp_path / "inv",
                      "--set", "projector.w_avg_samples=64", *FAST)
    assert inverted.exit_code == 0, inverted.output
    tuned = sgtool("tune", photo, "--latents", tmp_path / "inv" / "photo_latent.npy", "-n", SG3, "--tune-steps", 1,
                   "-o", tmp_path / "tuned", *FAST)
    assert tuned.exit_code == 0, tuned.output
    image = json.loads((tmp_path / "tuned" / "tune.json").read_text())["images"][0]
    assert image["transform"] is True  # StyleGAN3: the unaligned crop through the landmarks transform
    # "before" is the pivot's distance to its face (the same alignment invert made), not to the whole photo.
    G = load_generator(SG3)
    face = align_image(read_image(photo), size=64, max_faces=1)[0]
    pivot = torch.from_numpy(np.load(tmp_path / "inv" / "photo_latent.npy"))[None]
    with torch.no_grad():
        render = synthesize(G, pivot, torch.from_numpy(face.inverse_transform.astype(np.float32))[None])
    to_face = float(torch.nn.functional.mse_loss(render, generator_target(face.crop, 64)[None]))
    assert image["before"]["mse"] == pytest.approx(to_face, rel=1e-4)
    if width == 512:
        to_photo = float(torch.nn.functional.mse_loss(render, generator_target(read_image(photo), 64)[None]))
        assert abs(to_photo - to_face) > 1e-3
    # ... and the tuned generator edits the pivot, rendered through the transform invert recorded.
    tuned_generator = tmp_path / "tuned" / "tuned_generator.safetensors"
    edited = sgtool("edit", tmp_path / "inv" / "photo_latent.npy", "-n", tuned_generator, "--style", "L0_36_16:0=1",
                    "-o", tmp_path / "edit", "--device", "cpu", "--json")
    assert edited.exit_code == 0, edited.output
    assert json.loads(edited.stdout)["items"][0]["entries"][0]["transform"] is not None


# --- 3. latents of raw photos find their face in an alignment record; errors name the command's own options --


def test_latents_of_a_raw_photo_find_its_largest_face_in_alignment_json(tmp_path):
    from sgtool.demo import SAMPLE
    from sgtool.pipelines.shared.transforms import load_alignment

    assert sgtool("align", SAMPLE, "--size", 64, "-o", tmp_path / "al").exit_code == 0
    face0 = load_alignment(tmp_path / "al" / "alignment.json")["faces"][0]
    inverted = sgtool("invert", SAMPLE, "-m", "optimize", "-n", SG3, "--project-steps", 1, "-o", tmp_path / "inv",
                      "--set", "projector.w_avg_samples=64", *FAST)
    assert inverted.exit_code == 0, inverted.output
    transforms = tmp_path / "al" / "alignment.json"
    fov = sgtool("expand-fov", tmp_path / "inv" / "astronaut_latent.npy", "-n", SG3, "--all", 8, "--transforms",
                 transforms, "-o", tmp_path / "fov", "--device", "cpu", "--json")
    assert fov.exit_code == 0, fov.output
    entry = json.loads(fov.stdout)["items"][0]["entries"][0]
    centre = entry["tile_offsets"].index([0, 0])  # the plain render: through face 0's landmarks transform
    assert entry["unaligned"] is True
    np.testing.assert_allclose(np.load(entry["tile_transforms"])[centre], face0["inverse_transform"], atol=1e-6)
    edited = sgtool("edit", tmp_path / "inv" / "latents.npy", "-n", SG3, "--style", "L0_36_16:0=1",
                    "--transforms", transforms, "-o", tmp_path / "edit", "--device", "cpu", "--json")
    assert edited.exit_code == 0, edited.output  # the dict's key astronaut.jpg: the photo of that face
    np.save(tmp_path / "stranger_latent.npy", np.load(tmp_path / "inv" / "astronaut_latent.npy"))
    missing = sgtool("expand-fov", tmp_path / "stranger_latent.npy", "-n", SG3, "--all", 8, "--transforms",
                     transforms, "-o", tmp_path / "fov2", "--device", "cpu")
    assert missing.exit_code == 2 and "drop --transforms" in missing.stderr and "--aligned" not in missing.stderr


# --- 4. an encoder checkpoint's decoder works wherever a generator does -------------------------------------


def test_a_restyle_checkpoints_decoder_is_a_generator_everywhere(tmp_path):
    from sgtool.pipelines.invert import load_encoder

    checkpoint = golden_dir("encoders", "BackboneEncoder_ckpt.pt")  # stylegan3-editing's ReStyle over StyleGAN3
    decoder = load_generator(checkpoint)
    inverter = load_encoder(checkpoint)
    ws = decoder.mapping(torch.randn(1, decoder.z_dim, generator=torch.Generator().manual_seed(0)), None)
    with torch.no_grad():
        assert torch.equal(decoder.synthesis(ws), inverter.generator.synthesis(ws))  # the decoder the encoder uses
    info = sgtool("info", checkpoint, "--json")
    assert info.exit_code == 0 and json.loads(info.stdout)["kind"] == "stylegan3", info.output
    converted = sgtool("convert", checkpoint, tmp_path / "decoder.pkl")
    assert converted.exit_code == 0 and "differs by at most 0.00e+00" in converted.stderr, converted.output
    np.save(tmp_path / "a_latent.npy", ws[0].numpy())
    edited = sgtool("edit", tmp_path / "a_latent.npy", "-n", checkpoint, "--style", "L0_36_16:0=1",
                    "-o", tmp_path / "edit", "--device", "cpu")
    assert edited.exit_code == 0, edited.output
    refused = sgtool("edit", tmp_path / "a_latent.npy", "-e", checkpoint, "--style", "L0_36_16:0=1",
                     "-o", tmp_path / "edit2", "--device", "cpu")
    assert refused.exit_code == 2 and "an encoder checkpoint there renders with its decoder" in \
        " ".join(refused.stderr.split())


# --- 5. video with a StyleGAN2 encoder: aligned renders pasted back along the aligned quads -----------------


def test_video_with_a_stylegan2_e4e_renders_the_aligned_face_and_pastes_it_back(tmp_path):
    from sgtool.demo import SAMPLE, make_clip
    from sgtool.pipelines.shared.video_io import decode_frames

    clip = make_clip(SAMPLE, tmp_path / "clip.mp4", seconds=0.5, fps=8, size=192)
    encoder = golden_dir("sg2", "e4e_64", "e4e_64.pt")
    G = load_generator(encoder)
    np.save(tmp_path / "d.npy", np.random.RandomState(0).randn(1, G.w_dim).astype(np.float32))
    result = sgtool("video", clip, "-e", encoder, "--direction", f"d={tmp_path / 'd.npy'}", "--edit", "d=+3",
                    "--outputs", "output,recon", "-o", tmp_path / "v", "--device", "cpu")
    assert result.exit_code == 0, result.output
    latents = np.load(tmp_path / "v" / "latents.npy", mmap_mode="r")  # [2, T, num_ws, w_dim]: raw, smoothed
    with torch.no_grad():
        aligned = G.synthesis(torch.from_numpy(np.array(latents[1, :1])), noise_mode="const")
    expected = ((aligned[0].permute(1, 2, 0) * 127.5 + 128).clamp(0, 255)).numpy()
    recon = next(iter(decode_frames(tmp_path / "v" / "recon.mp4")))
    from PIL import Image

    small = np.asarray(Image.fromarray(recon).resize((64, 64), Image.Resampling.BILINEAR), np.float32)
    assert np.corrcoef(small.ravel(), expected.ravel())[0, 1] > 0.8  # the aligned render, H.264 aside
    frames = list(decode_frames(tmp_path / "v" / "output.mp4"))
    original = list(decode_frames(clip))
    assert len(frames) == len(original) == 4
    changed = np.abs(frames[0].astype(int) - original[0].astype(int)).max(axis=2) > 40
    assert 0 < changed.mean() < 0.5  # the face pasted back, the rest of the frame kept
    # Another edit of the clip into the same folder reuses the cached stages; the first edit's videos are kept.
    again = sgtool("video", clip, "-e", encoder, "--direction", f"d={tmp_path / 'd.npy'}", "--edit", "d=-3",
                   "--outputs", "output,recon", "-o", tmp_path / "v", "--device", "cpu")
    assert again.exit_code == 0, again.output
    kept = list((tmp_path / "v" / "earlier").glob("*/output.mp4"))
    assert len(kept) == 1 and "held the outputs of a run with other settings" in again.stderr
    assert json.loads((kept[0].parent / "video.json").read_text())["settings"]["edits"] == ["d=+3"]


# --- outputs never overwrite silently ------------------------------------------------------------------------


def test_a_second_generate_into_a_folder_adds_seeds_or_refuses_other_settings(tmp_path):
    out = tmp_path / "gen"
    assert sgtool("generate", "-n", "tiny-stylegan2", "--seeds", "0-1", "-o", out, "--device", "cpu").exit_code == 0
    assert sgtool("generate", "-n", "tiny-stylegan2", "--seeds", "5", "-o", out, "--device", "cpu").exit_code == 0
    record = json.loads((out / "generate.json").read_text())
    assert sorted(image["seed"] for image in record["images"]) == [0, 1, 5]
    before = (out / "seed0000.png").read_bytes()
    other = sgtool("generate", "-n", "tiny-stylegan2", "--seeds", "0", "--trunc", "0.5", "-o", out, "--device", "cpu")
    assert other.exit_code == 2 and "trunc 1.0 there, 0.5 now" in " ".join(other.stderr.split())
    assert (out / "seed0000.png").read_bytes() == before
