"""`sgtool edit PHOTO --region FILE|PART` and `--scribble FILE` on a real photo (skimage's astronaut, twice):
the region, drawn on the photo, is warped into each face's render frame, the face's latent is optimised to edit
only there, and the render is pasted back; faces the region misses keep the photo's pixels."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sgtool.cli import app
from sgtool.demo import build_test_models
from sgtool.pipelines.edit.paste import head_mask, paste, to_frame
from sgtool.pipelines.edit.regions import FACE_PARTS, part_mask
from sgtool.settings import EditSettings, Mask

from support.photos import two_astronauts

runner = CliRunner()
TEST_ONLY = ["--set", "invert.lpips_random_backbone=true"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Test models, a direction, and two astronauts (one smaller and tilted) on one canvas."""
    folder = tmp_path_factory.mktemp("models")
    models = build_test_models(folder)
    np.save(folder / "d.npy", np.random.RandomState(0).randn(1, 512).astype(np.float32) * 2)
    canvas = two_astronauts()
    path = folder / "pair.png"
    Image.fromarray(canvas).save(path)
    args = ["-e", models.encoder, "-n", models.network, "--direction", f"d={folder / 'd.npy'}", "--device", "cpu"]
    return path, canvas, args


def region_change(edited, reference, head, region, band: int) -> tuple[float, float]:
    """Mean change of `edited` from the unedited paste inside the head, (inside the region, outside it), both
    away from the region's feathered edge (a `band` px wide ring)."""
    ring = cv2.dilate(region, np.ones((band, band))) != cv2.erode(region, np.ones((band, band)))
    diff = change(edited, reference)
    return (float(diff[(head > 0.9) & (region > 0) & ~ring].mean()),
            float(diff[(head > 0.9) & (region == 0) & ~ring].mean()))


def edit(path, args, *extra, steps=40):
    return runner.invoke(app, ["edit", str(path), *args, *map(str, extra), "--local-steps", str(steps), *TEST_ONLY,
                               "--json"])


def face_data(out, k, shape):
    face_dir = out / "faces" / "pair" / f"face{k}"
    landmarks = np.load(face_dir / "landmarks.npy").astype(np.float64)
    weights, (y0, y1, x0, x1) = head_mask(landmarks, shape, Mask())
    head = np.zeros(shape[:2], np.float32)
    head[y0:y1, x0:x1] = weights
    return landmarks, head


def change(a, b):
    return np.abs(a.astype(np.float64) - b.astype(np.float64)).mean(axis=2)


def test_the_frame_warp_is_pastes_inverse():
    """A mask drawn on a photo, taken into a tilted face's frame and pasted back, lands where it was drawn."""
    photo = np.zeros((200, 240), np.float32)
    cv2.circle(photo, (120, 90), 30, 1.0, -1)
    angle = np.deg2rad(20)
    x, y = 110 * np.array([np.cos(angle), np.sin(angle)]), 110 * np.array([-np.sin(angle), np.cos(angle)])
    centre = np.array([120.0, 100.0])
    quad = np.stack([centre - x / 2 - y / 2, centre - x / 2 + y / 2, centre + x / 2 + y / 2, centre + x / 2 - y / 2])
    for size in (64, 256):  # shrunk from the photo, and enlarged
        frame = to_frame(photo, quad, size)
        rgb = np.repeat((frame * 255).round().astype(np.uint8)[..., None], 3, axis=2)
        back = paste(np.zeros((200, 240, 3), np.uint8), rgb, quad, np.ones((200, 240), np.float32), (0, 200, 0, 240),
                     edge_feather=0)[..., 0] / 255.0
        inner = cv2.erode(photo, np.ones((9, 9))) > 0.5
        outer = cv2.dilate(photo, np.ones((9, 9))) < 0.5
        assert back[inner].min() > 0.9 and back[outer].max() < 0.1, size


@pytest.fixture(scope="module")
def unedited(setup, tmp_path_factory):
    """A folder holding the faces' inversions and the reference: the unedited renders pasted back."""
    path, _, args = setup
    out = tmp_path_factory.mktemp("edits")
    plain = edit(path, args, "--edit", "d=+0", "-o", out)
    assert plain.exit_code == 0, plain.output
    return out, np.asarray(Image.open(out / "pair_d+0.png"))


def test_a_region_drawn_on_the_photo_edits_only_there_and_faces_it_misses_stay(setup, unedited, tmp_path):
    path, canvas, args = setup
    out, reference = unedited
    (landmarks, head), _ = (face_data(out, k, canvas.shape) for k in range(2))
    # A region that misses every face: the photo comes back as it was.
    corner = np.zeros(canvas.shape[:2], np.uint8)
    corner[400:, 880:] = 255
    Image.fromarray(corner).save(tmp_path / "corner.png")
    missed = edit(path, args, "--edit", "d=+3", "--region", tmp_path / "corner.png", "-o", out)
    assert missed.exit_code == 0, missed.output
    assert np.array_equal(np.asarray(Image.open(out / "pair_d+3.png")), canvas)

    # The lower half of the larger face (face 0), from just above its mouth down.
    region = np.zeros(canvas.shape[:2], np.uint8)
    region[int(landmarks[[61, 291], 1].mean()) - 25:, :400] = 255
    Image.fromarray(region).save(tmp_path / "lower.png")
    result = edit(path, args, "--edit", "d=+3", "--region", tmp_path / "lower.png", "-o", out, steps=60)
    assert result.exit_code == 0, result.output
    item = json.loads(result.stdout)["items"][0]
    assert item["stages"]["invert"]["cached"] and [f.get("untouched", False) for f in item["faces"]] == [False, True]
    edited = np.asarray(Image.open(out / "pair_d+3.png"))
    assert np.array_equal(edited[head == 0], canvas[head == 0])  # face 1 (missed) and the background: the photo
    assert (out / "pair_face0_d+3.png").is_file()
    # Inside the head, away from the region's feathered edge: the edit inside, the unedited render outside.
    inside, outside = region_change(edited, reference, head, region, band=31)
    print(f"photo region edit: change vs the unedited paste {inside:.2f} inside, {outside:.2f} outside "
          f"(ratio {outside / inside:.3f})")
    assert outside / inside < 0.3


def test_a_named_face_part_is_found_on_every_face(setup, unedited):
    path, canvas, args = setup
    out, reference = unedited
    landmarks, head = face_data(out, 1, canvas.shape)  # the smaller, tilted face
    parts = {name: part_mask(landmarks, name, canvas.shape, Mask()) for name in FACE_PARTS}
    centre = {name: np.argwhere(mask > 0).mean(axis=0) for name, mask in parts.items()}  # (y, x)
    assert all(mask.sum() > 50 for mask in parts.values())
    assert all(name in EditSettings.model_fields["region"].description for name in FACE_PARTS)  # documented
    assert centre["eyebrows"][0] < centre["eyes"][0] < centre["nose"][0] < centre["mouth"][0]
    assert not (parts["skin"] * parts["mouth"]).any() and not (parts["hair"] * parts["face"]).any()
    result = edit(path, args, "--edit", "d=+3", "--region", "face", "--face", 1, "-o", out, steps=60)
    assert result.exit_code == 0, result.output
    edited = np.asarray(Image.open(out / "pair_d+3.png"))
    inside, outside = region_change(edited, reference, head, parts["face"].astype(np.uint8), band=15)
    print(f"--region face (face 1): change {inside:.2f} inside, {outside:.2f} around it (ratio {outside / inside:.3f})")
    assert outside / inside < 0.35


def test_scribbles_on_the_photo_become_real(setup, unedited, tmp_path):
    path, canvas, args = setup
    out, reference = unedited
    landmarks, head = face_data(out, 0, canvas.shape)
    painted = canvas.copy()
    x, y = landmarks[1].astype(int)  # the nose tip
    painted[y - 40:y + 40, x - 10:x + 10] = (250, 250, 250)
    Image.fromarray(painted).save(tmp_path / "strokes.png")
    result = edit(path, args, "--scribble", tmp_path / "strokes.png", "-o", out)
    assert result.exit_code == 0, result.output
    assert [f.get("untouched", False) for f in json.loads(result.stdout)["items"][0]["faces"]] == [False, True]
    scribbled = np.asarray(Image.open(out / "pair_scribble.png"))
    stroke = np.zeros(canvas.shape[:2], bool)
    stroke[y - 35:y + 35, x - 6:x + 6] = True
    far = (head > 0.9) & (cv2.dilate(stroke.astype(np.uint8), np.ones((41, 41))) == 0)
    diff = change(scribbled, reference)
    print(f"photo scribble: the stroke's area {scribbled[stroke].mean():.0f} (unedited {reference[stroke].mean():.0f}),"
          f" change {diff[stroke].mean():.2f} there and {diff[far].mean():.2f} far from it")
    assert scribbled[stroke].astype(np.float64).mean() > reference[stroke].astype(np.float64).mean() + 20
    assert diff[far].mean() < 0.5 * diff[stroke].mean()

    # Strokes on a copy of another size: one line, exit 2, nothing written.
    Image.fromarray(painted[:, :800]).save(tmp_path / "cut.png")
    bad = runner.invoke(app, ["edit", str(path), *args, "--scribble", str(tmp_path / "cut.png"), *TEST_ONLY,
                              "-o", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "800x420" in bad.stderr and "900x420" in bad.stderr, bad.output
    assert len(bad.stderr.strip().splitlines()) == 1 and not list((tmp_path / "bad").glob("*.png"))
