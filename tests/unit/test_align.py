"""Face alignment: detection on real/synthetic photos, the FFHQ recipe, and the landmarks transform."""

from __future__ import annotations


import cv2
import numpy as np
import pytest
import scipy.ndimage
import skimage.data
import torch
from PIL import Image

from support.golden import golden_dir
from sgtool.errors import SgtoolError
from sgtool.geometry import make_transform
from sgtool.pipelines import align as A
from sgtool.pipelines.align.faces import FaceFinder, pyramid_tiles
from sgtool.pipelines.shared.images import read_image

SIZE = 256


@pytest.fixture(scope="module")
def finder():
    found = FaceFinder()
    yield found
    found.close()


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def astronaut_faces(astronaut, finder):
    return A.align_image(astronaut, size=SIZE, finder=finder)


def similarity(angle_deg: float, scale: float, shift, centre) -> np.ndarray:
    """2x3 matrix: rotate (counter-clockwise on screen) and scale about `centre`, then shift (pixels)."""
    matrix = cv2.getRotationMatrix2D(tuple(float(v) for v in centre), angle_deg, scale)
    matrix[:, 2] += shift
    return matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:, :2].T + matrix[:, 2]


def eye_key_points(finder, image):
    faces = finder.find(image)
    assert faces, "no face found on a rendered crop"
    return A.key_points(faces[0].landmarks)


# ---------------------------------------------------------------------------------------------------------
# The recipe


def test_ffhq_recipe_matches_hand_computed_quad():
    # eye_avg (5, 0), eye_to_eye (10, 0), eye_to_mouth (0, 10): x = (20, 0), side max(20, 18) * 2, c = (5, 1).
    quad = A.quad_from_landmarks([[0, 0], [10, 0]], [[0, 10], [10, 10]], "ffhq")
    np.testing.assert_allclose(quad, [[-15, -19], [-15, 21], [25, 21], [25, -19]], atol=1e-12)
    # The mouth term wins when the mouth is far below the eyes; "eyes" ignores it.
    ffhq = A.quad_from_landmarks([[0, 0], [10, 0]], [[0, 30], [10, 30]], "ffhq")
    eyes = A.quad_from_landmarks([[0, 0], [10, 0]], [[0, 30], [10, 30]], "eyes")
    assert A.quad_side(ffhq) == pytest.approx(2 * 1.8 * 30)
    assert A.quad_side(eyes) == pytest.approx(2 * 2.0 * 10)
    np.testing.assert_allclose(ffhq.mean(axis=0), eyes.mean(axis=0))  # same centre eye_avg + 0.1 eye_to_mouth


def test_recipe_orientation_follows_a_tilted_face():
    # Eye line rotated 30 degrees clockwise on screen (y down): the quad's x edge follows it.
    rot = similarity(-30, 1.0, (0, 0), (0, 0))
    eyes = apply(rot, np.array([[-10.0, 0], [10, 0]]))
    mouth = apply(rot, np.array([[-8.0, 25], [8, 25]]))
    quad = A.quad_from_landmarks(eyes, mouth)
    edge = quad[3] - quad[0]
    assert np.degrees(np.arctan2(edge[1], edge[0])) == pytest.approx(30, abs=1e-9)


def test_degenerate_landmarks_raise_instead_of_nan():
    with pytest.raises(SgtoolError, match="degenerate"):
        A.quad_from_landmarks([[5, 5], [5, 5]], [[5, 5], [5, 5]])
    with pytest.raises(SgtoolError, match="recipe"):
        A.quad_from_landmarks([[0, 0], [10, 0]], [[0, 10], [10, 10]], "dlib")


def test_crop_from_quad_samples_the_quad_with_pixel_centre_convention(astronaut):
    # A rotated quad well inside the image: no shrink, no padding; with supersample=1 the output is PIL's
    # bilinear sample of the source at c + Q a for each output pixel centre a.
    quad = A.quad_from_landmarks([[200, 110], [250, 100]], [[205, 160], [245, 152]])
    out = A.crop_from_quad(astronaut, quad, 64, supersample=1)
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], axis=1)
    grid = A.pixels_to_generator(np.stack(np.meshgrid(np.arange(64), np.arange(64)), -1).reshape(-1, 2), 64)

    def error(offset):
        src = grid @ axes.T + quad.mean(axis=0) + offset
        expected = np.stack([scipy.ndimage.map_coordinates(astronaut[..., ch].astype(float), [src[:, 1], src[:, 0]],
                                                           order=1) for ch in range(3)], -1).reshape(64, 64, 3)
        return np.abs(out.astype(float) - expected).mean()

    # PIL interpolates in fixed point (a few levels off at hard edges); a quarter pixel off is far worse.
    assert error(0.0) < 1.0
    assert error(0.25) > 3 * error(0.0) and error(-0.25) > 3 * error(0.0)


def test_crop_from_quad_pads_outside_the_image(astronaut):
    quad = A.crop_quad_from(A.quad_from_landmarks([[10, 10], [60, 10]], [[15, 60], [55, 60]]))
    out = A.crop_from_quad(astronaut, quad, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert out[:8, :8].std() < astronaut.std()  # the blurred, median-blended padding, not black
    assert out[:8, :8].mean() > 20


# ---------------------------------------------------------------------------------------------------------
# The landmarks transform


def test_transform_between_equal_quads_is_identity_without_nan():
    quad = A.quad_from_landmarks([[100.3, 50.1], [140.7, 52.9]], [[105, 95], [135, 97]])
    transform = A.transform_between(quad, quad)
    np.testing.assert_allclose(transform, np.eye(3), atol=1e-12)
    angle, translate, scale = A.transform_parameters(transform)
    assert angle == pytest.approx(0, abs=1e-9) and np.all(np.isfinite(translate)) and scale == pytest.approx(1)


def test_transform_between_matches_make_transform():
    side = 200.0
    aligned = A.crop_quad_from(np.array([[0, 0], [0, side], [side, side], [side, 0]]) + [50, 80])
    rotation = similarity(-17, 1.0, (0, 0), aligned.mean(axis=0))  # the face leans 17 degrees clockwise
    aligned = apply(rotation, aligned)
    crop = A.crop_quad_from(aligned) + [30, -12]  # crop square moved 30 px right, 12 px up
    transform = A.transform_between(aligned, crop)
    angle, translate, scale = A.transform_parameters(transform)
    # Clockwise lean -> negative angle; the face centre sits 30 px left of and 12 px below the crop centre.
    assert angle == pytest.approx(-17, abs=1e-9)
    np.testing.assert_allclose(translate, [-30 / side, 12 / side], atol=1e-12)
    assert scale == pytest.approx(1, abs=1e-12)
    np.testing.assert_allclose(transform, make_transform(translate, angle), atol=1e-12)


def test_aligned_key_points_land_on_crop_key_points(finder, astronaut):
    # A face tilted by 20 degrees: detect the key points again on both renders and map them through T.
    canvas = cv2.warpAffine(astronaut, similarity(20, 1.0, (0, 0), (225, 120)), (512, 512),
                            borderMode=cv2.BORDER_REFLECT)
    face = A.align_image(canvas, size=SIZE, finder=finder)[0]
    assert face.angle == pytest.approx(20, abs=3)
    on_aligned = np.concatenate(eye_key_points(finder, face.aligned))
    on_crop = np.concatenate(eye_key_points(finder, face.crop))
    mapped = A.generator_to_pixels(A.apply_transform(face.transform, A.pixels_to_generator(on_aligned, SIZE)), SIZE)
    assert np.abs(mapped - on_crop).max() < 0.01 * SIZE
    # The same through the source: where the quads put the detected source points.
    via_quads = A.source_to_quad(face.crop_quad, np.concatenate([face.eyes, face.mouth]), SIZE)
    assert np.abs(via_quads - on_crop).max() < 0.01 * SIZE
    # And photometrically: every aligned pixel equals the crop sampled at T(pixel), in the centre region.
    grid = np.stack(np.meshgrid(np.arange(64, 192), np.arange(64, 192)), -1).reshape(-1, 2)
    for transform, limit in ((face.transform, 6.0), (face.inverse_transform, None)):
        target = A.generator_to_pixels(A.apply_transform(transform, A.pixels_to_generator(grid, SIZE)), SIZE)
        sampled = np.stack([scipy.ndimage.map_coordinates(face.crop[..., ch].astype(float),
                                                          [target[:, 1], target[:, 0]], order=1)
                            for ch in range(3)], -1)
        error = np.abs(sampled - face.aligned[grid[:, 1], grid[:, 0]].astype(float)).mean()
        if limit is not None:
            assert error < limit
            right_error = error
        else:
            assert error > 3 * right_error  # the inverse (a wrong convention) does not fit


def _pixel_matrix(transform: np.ndarray, res: int) -> np.ndarray:
    """A transform in generator coordinates as a pixel-coordinate 3x3 matrix for a res x res image."""
    to_norm = np.array([[1 / res, 0, 0.5 / res - 0.5], [0, 1 / res, 0.5 / res - 0.5], [0, 0, 1]])
    return np.linalg.inv(to_norm) @ transform @ to_norm


def phase_shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(dx, dy) in pixels with b(p) ~ a(p - d): peak of the normalised cross-power spectrum, parabolic subpixel."""
    window = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1]))
    cross = np.fft.fft2(b * window) * np.conj(np.fft.fft2(a * window))
    corr = np.real(np.fft.ifft2(cross / np.maximum(np.abs(cross), 1e-20)))
    peak = np.unravel_index(np.argmax(corr), corr.shape)
    shift = []
    for axis in (1, 0):
        idx = list(peak)
        values = []
        for step in (-1, 0, 1):
            idx[axis] = (peak[axis] + step) % corr.shape[axis]
            values.append(corr[tuple(idx)])
        denom = values[0] - 2 * values[1] + values[2]
        offset = 0.5 * (values[0] - values[2]) / denom if denom != 0 else 0.0
        pos = peak[axis] + offset
        shift.append(pos - corr.shape[axis] if pos > corr.shape[axis] / 2 else pos)
    return np.array(shift)


def estimate_motion(base: np.ndarray, moved: np.ndarray, angles=np.arange(-40, 40.01, 0.5)):
    """(angle, tx, ty) in the generator convention with moved(T p) ~ base(p): rotation by search, shift by
    phase correlation, best by mean squared error in the central disc."""
    res = base.shape[0]
    yy, xx = np.mgrid[:res, :res]
    disc = (xx - (res - 1) / 2) ** 2 + (yy - (res - 1) / 2) ** 2 < (0.4 * res) ** 2

    def warp(transform):
        return cv2.warpAffine(base, _pixel_matrix(np.linalg.inv(transform), res)[:2], (res, res),
                              flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REFLECT)

    best = None
    for angle in angles:
        dx, dy = phase_shift(warp(make_transform((0, 0), angle)), moved) / res
        error = np.mean((warp(make_transform((dx, dy), 0) @ make_transform((0, 0), angle)) - moved)[disc] ** 2)
        if best is None or error < best[0]:
            best = (error, angle, dx, dy)
    return best[1:]


@pytest.mark.parametrize("fixture, lean, shift", [
    pytest.param("sg3r_64", -12.0, (14.0, -9.0), marks=pytest.mark.slow),  # over 30 s on 2 cores
    ("sg3t_64", 0.0, (-12.0, 7.0)),
])
def test_stylegan3_render_moves_as_the_transform_says(fixture, lean, shift):
    # sg3r is rotation-equivariant, sg3t only translation-equivariant, so sg3t checks the shift alone.
    pkl = golden_dir("generators") / f"{fixture}.pkl"
    from sgtool.models import load_generator

    side = 160.0
    aligned = apply(similarity(lean, 1.0, (0, 0), (200, 200)),
                    A.crop_quad_from(np.array([[0, 0], [0, side], [side, side], [side, 0]]) + 120))
    crop = A.crop_quad_from(aligned) + shift
    transform = A.transform_between(aligned, crop)
    angle, translate, _ = A.transform_parameters(transform)
    G = load_generator(pkl)
    z = torch.from_numpy(np.random.RandomState(1).randn(1, G.z_dim)).float()
    with torch.no_grad():
        ws = G.mapping(z, None)
        base = G.synthesis(ws, transform=torch.eye(3))[0].mean(0).double().numpy()
        inverse = torch.from_numpy(np.linalg.inv(transform)).float()
        moved = G.synthesis(ws, transform=inverse)[0].mean(0).double().numpy()
    est_angle, est_tx, est_ty = estimate_motion(base, moved)
    assert est_angle == pytest.approx(angle, abs=1.0)
    assert est_tx == pytest.approx(translate[0], abs=0.02) and est_ty == pytest.approx(translate[1], abs=0.02)
    assert abs(translate).max() > 0.05  # the case really moves the picture


# ---------------------------------------------------------------------------------------------------------
# Detection on photographs


def test_astronaut_real_photo(astronaut_faces, astronaut):
    assert len(astronaut_faces) == 1  # the helmet badge is not a face
    face = astronaut_faces[0]
    assert face.aligned.shape == face.crop.shape == (SIZE, SIZE, 3)
    assert face.landmarks.shape == (478, 2)
    left, right = face.eyes
    assert 180 < left[0] < right[0] < 270 and 80 < left[1] < 125 and 80 < right[1] < 125
    assert 30 < np.hypot(*(right - left)) < 60
    assert face.mouth[:, 1].min() > face.eyes[:, 1].max()
    assert abs(face.angle) < 8
    np.testing.assert_allclose(face.inverse_transform @ face.transform, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(face.translate, 0, atol=1e-12)  # the crop shares the quad's centre
    # The recipe centres eye_avg + 0.1 * eye_to_mouth; the eyes come out nearly level and symmetric.
    eye_avg = face.eyes.mean(axis=0)
    centre = eye_avg + 0.1 * (face.mouth.mean(axis=0) - eye_avg)
    np.testing.assert_allclose(A.source_to_quad(face.quad, centre[None], SIZE)[0], [(SIZE - 1) / 2] * 2, atol=1e-9)
    on_aligned = A.source_to_quad(face.quad, face.eyes, SIZE)
    assert abs(on_aligned[0, 1] - on_aligned[1, 1]) < 0.02 * SIZE
    assert on_aligned[0, 0] + on_aligned[1, 0] == pytest.approx(SIZE - 1, abs=0.02 * SIZE)


def test_astronaut_recipes_and_max_faces(astronaut, finder, astronaut_faces):
    eyes = A.align_image(astronaut, size=SIZE, recipe="eyes", max_faces=1, finder=finder)
    assert len(eyes) == 1
    # For this face 2 * eye distance exceeds 1.8 * eye-to-mouth, so both recipes pick the same quad.
    np.testing.assert_allclose(eyes[0].quad, astronaut_faces[0].quad, atol=1e-9)
    with pytest.raises(SgtoolError, match="recipe"):
        A.align_image(astronaut, recipe="nope", finder=finder)


def test_no_face(finder):
    assert A.align_image(skimage.data.coffee(), size=SIZE, finder=finder) == []
    assert A.align_image(np.full((300, 400, 3), 128, np.uint8), size=SIZE, finder=finder) == []


@pytest.mark.parametrize("angle, scale, shift", [(25, 0.8, (40, 30)), (-35, 1.2, (-20, 10)), (10, 0.6, (100, -40))])
def test_known_motion_moves_the_quad(finder, astronaut, astronaut_faces, angle, scale, shift):
    matrix = similarity(angle, scale, shift, (225, 140))
    moved = cv2.warpAffine(astronaut, matrix, (512, 512), borderMode=cv2.BORDER_REFLECT)
    faces = A.align_image(moved, size=64, finder=finder)
    expected = apply(matrix, astronaut_faces[0].quad)
    face = min(faces, key=lambda f: np.abs(f.quad - expected).max())
    assert np.abs(face.quad - expected).max() < 0.02 * A.quad_side(expected)
    assert face.angle - astronaut_faces[0].angle == pytest.approx(angle, abs=2.0)


def group_photo(astronaut, face_centre):
    """Five copies of the astronaut, scaled and rotated, on one canvas; returns it and where face_centre went."""
    canvas = np.full((760, 1100, 3), 96, np.uint8)
    placements = [(0.9, 0, (40, 30)), (0.5, 25, (560, 40)), (0.35, -40, (880, 80)), (0.3, 15, (600, 420)),
                  (0.6, -20, (80, 430))]
    centres = []
    for scale, angle, (x, y) in placements:
        side = int(512 * scale)
        matrix = similarity(angle, scale, (side / 2 - 256, side / 2 - 256), (256, 256))
        canvas[y:y + side, x:x + side] = cv2.warpAffine(astronaut, matrix, (side, side), borderValue=(30, 30, 30))
        centres.append(apply(matrix, face_centre[None])[0] + [x, y])
    return canvas, np.array(centres)


def test_group_photo_finds_every_face(finder, astronaut, astronaut_faces):
    canvas, centres = group_photo(astronaut, astronaut_faces[0].quad.mean(axis=0))
    faces = A.align_image(canvas, size=64, min_face_size=24, finder=finder)
    assert len(faces) == len(centres)
    found = np.array([f.quad.mean(axis=0) for f in faces])
    for centre in centres:
        assert np.hypot(*(found - centre).T).min() < 6
    sides = [A.quad_side(f.quad) for f in faces]
    assert sides == sorted(sides, reverse=True)  # largest first
    only = A.align_image(canvas, size=64, min_face_size=24, max_faces=2, finder=finder)
    np.testing.assert_allclose([f.quad for f in only], [f.quad for f in faces[:2]])
    big_only = A.align_image(canvas, size=64, min_face_size=70, finder=finder)
    assert 1 <= len(big_only) < len(faces)


def test_pyramid_covers_small_faces():
    tiles = pyramid_tiles(3000, 4000, 40)
    sides = sorted({side for _, _, side in tiles})
    assert max(sides) == 4000 and min(sides) * 0.1 <= 40
    for side in sides[:-1]:  # every level's tiles cover the whole image
        covered = np.zeros((3000, 4000), bool)
        for x, y, s in tiles:
            if s == side:
                covered[y:y + s, x:x + s] = True
        assert covered.all()


# ---------------------------------------------------------------------------------------------------------
# Reading files


def test_read_image_modes_and_exif(tmp_path, astronaut):
    # EXIF orientation 6: stored pixels need a 90-degree clockwise turn to display upright.
    stored = Image.fromarray(np.rot90(astronaut, k=1).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(tmp_path / "exif.png", exif=exif)
    np.testing.assert_array_equal(read_image(tmp_path / "exif.png"), astronaut)

    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (512, 512, 3) and (out[:10, :10] == 255).all()
    np.testing.assert_array_equal(out[20:], astronaut[20:])

    grey16 = (skimage.color.rgb2gray(astronaut) * 65535).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    out = read_image(tmp_path / "grey16.png")
    assert out.shape == (512, 512, 3) and out.dtype == np.uint8
    assert np.abs(out[..., 0].astype(int) - np.rint(grey16 / 257)).max() <= 1

    Image.fromarray(astronaut).convert("L").save(tmp_path / "grey.jpg")
    assert read_image(tmp_path / "grey.jpg").shape == (512, 512, 3)


def test_align_file_on_16_bit_greyscale(tmp_path, astronaut, finder):
    grey16 = (skimage.color.rgb2gray(astronaut) * 65535).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    faces = A.align_file(tmp_path / "grey16.png", size=64, finder=finder)
    assert len(faces) == 1


@pytest.mark.parametrize("content, match", [(b"not an image at all", "cannot read"), (b"", "cannot read")])
def test_corrupt_files_raise_one_line(tmp_path, content, match):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(content)
    with pytest.raises(SgtoolError, match=match) as info:
        read_image(bad)
    assert str(bad) in str(info.value) and "\n" not in str(info.value)


def test_truncated_file_raises(tmp_path, astronaut):
    Image.fromarray(astronaut).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(SgtoolError, match="cut.png"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(SgtoolError, match="no such file"):
        read_image(tmp_path / "missing.png")
