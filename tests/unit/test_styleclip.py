"""StyleCLIP global directions on the official file layouts (golden stylegan3-editing arithmetic), hostile pickles,
the known-generator pairs, and the CLIP text side with a random-weight open_clip ViT-B-32."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sgtool import hub
from sgtool.editing import clip_text, styleclip, stylespace
from sgtool.errors import SgtoolError
from sgtool.models import load_generator
from support.clip_models import TINY_CLIP, random_clip
from support.golden import golden_dir

_CACHE: dict = {}


@pytest.fixture
def golden():
    if "sg3" not in _CACHE:
        _CACHE["sg3"] = load_generator(golden_dir("generators", "sg3t_64.pkl"))
    return _CACHE["sg3"], dict(np.load(golden_dir("styleclip", "sg3t_64_styleclip_io.npz")))


def test_s_stats_load_as_the_reference_wrote_them(golden):
    G, data = golden
    stats = styleclip.load_s_stats(golden_dir("styleclip", "s_stats"))
    assert set(stats.pose) == {"theta", "x", "y"}
    assert list(stats.std) == [layer.name for layer in stylespace.style_layers(G)]
    for name in stats.std:
        np.testing.assert_array_equal(stats.mean[name], data[f"s_mean/{name}"])
        np.testing.assert_array_equal(stats.std[name], data[f"s_std/{name}"])
    styleclip.check_s_stats(stats, G, "s_stats")
    with pytest.raises(SgtoolError, match="made for another generator"):
        styleclip.check_s_stats(stats, load_generator(golden_dir("generators", "sg3r_64.pkl")), "s_stats")


def test_written_s_stats_are_the_official_layout(golden, tmp_path):
    G, data = golden
    stats = stylespace.s_statistics(G, 2000)
    path = styleclip.save_s_stats(tmp_path / "s_stats", stats)
    with open(path, "rb") as f:
        pose, mean, std = pickle.load(f)  # as stylegan3-editing's edit.py reads it (our own file)
    assert set(pose) == {"theta", "x", "y"} and all(isinstance(v, np.floating) for v in pose.values())
    assert list(mean) == list(std) == list(stats.std) and all(v.dtype == np.float32 for v in std.values())
    for name in std:
        np.testing.assert_allclose(std[name], data[f"s_std/{name}"], atol=1e-5, rtol=0)


def test_global_direction_and_edits_match_the_reference(golden):
    G, data = golden
    stats = styleclip.load_s_stats(golden_dir("styleclip", "s_stats"))
    delta_i_c = styleclip.load_delta_i_c(golden_dir("styleclip", "delta_i_c.npy"), stats.std)
    styles = stylespace.w_to_s(G, torch.from_numpy(data["ws"]))
    for k, beta in enumerate(data["betas"]):
        direction = styleclip.global_direction(delta_i_c, data["delta_i"], stats.std, float(beta))
        assert list(direction) == list(styles)
        for name, values in direction.items():
            np.testing.assert_allclose(values.numpy(), data[f"dir_b{k}/{name}"], atol=1e-5, rtol=0)
        assert styleclip.kept_channels(direction) == int(data[f"nonzero_b{k}"])
        for j, alpha in enumerate(data["alphas"]):
            image = stylespace.render_s(G, styleclip.apply_direction(styles, direction, float(alpha)))
            np.testing.assert_allclose(image.numpy(), data[f"img_edit_b{k}_a{j}"], atol=2e-4, rtol=0)


def test_a_folder_of_official_files_drives_the_edit(golden):
    G, data = golden
    files = styleclip.direction_files(G, folder=golden_dir("styleclip"))
    directions = styleclip.GlobalDirections.load(files, G)
    direction = directions.direction(data["delta_i"], float(data["betas"][1]))
    np.testing.assert_allclose(direction["L4_52_16"].numpy(), data["dir_b1/L4_52_16"], atol=1e-5, rtol=0)
    with pytest.raises(SgtoolError, match="no published StyleCLIP directions.*sgtool directions styleclip"):
        styleclip.direction_files(G, "sg3t_64.pkl")
    with pytest.raises(SgtoolError, match="made for another generator"):
        styleclip.GlobalDirections.load(files, load_generator(golden_dir("generators", "sg2_64.pkl")))


def test_missing_direction_files_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SGTOOL_HOME", str(tmp_path))
    monkeypatch.setenv("SGTOOL_OFFLINE", "1")
    monkeypatch.delenv("SGTOOL_MODELS_REGISTRY", raising=False)
    generator = SimpleNamespace(kind="stylegan3", config_name="stylegan3-r", img_resolution=1024)
    with pytest.raises(SgtoolError) as caught:
        styleclip.direction_files(generator, "stylegan3-r-ffhqu-1024x1024.pkl")
    message = str(caught.value)
    assert "styleclip-sg3-r-ffhqu-1024-delta-i-c" in message and "drive.google.com" in message
    assert str(tmp_path / "models" / "sg3-r-ffhqu-1024_delta_i_c.npy") in message and "\n" not in message
    with pytest.raises(SgtoolError, match="styleclip_templates.txt"):
        clip_text.resolve_templates()


def test_stylegan2_directions_follow_styleclips_layout(tmp_path):
    # fs3 rows cover the non-torgb layers from the first; torgb and uncovered layers get no direction.
    G = load_generator(golden_dir("sg2", "rosinality_64", "stylegan2_64.pt"))
    stats = stylespace.s_statistics(G, 64)
    path = styleclip.save_s_stats(tmp_path / "S_mean_std", stats)
    with open(path, "rb") as f:
        _means, stds = pickle.load(f)  # HyperStyle's edit.py: `_, s_std = pickle.load(...)`, a list per S layer
    assert len(stds) == len(stats.std) == 26 - 3 * 4 and isinstance(stds, list)
    loaded = styleclip.load_s_stats(path)
    assert loaded.pose is None and list(loaded.std) == list(stats.std)
    names = list(stats.std)
    covered = ["b4.conv1", "b8.conv0", "b8.conv1"]
    rows = sum(len(stats.std[n]) for n in covered)
    delta_i_c = np.random.RandomState(0).randn(rows, 8).astype(np.float32)
    delta_i = np.random.RandomState(1).randn(8).astype(np.float32)
    direction = styleclip.global_direction(delta_i_c, delta_i, loaded.std, beta=0.5)
    relevance = delta_i_c @ delta_i
    kept = np.where(np.abs(relevance) < 0.5, 0, relevance) / np.abs(relevance).max()
    offsets = np.cumsum([0] + [len(stats.std[n]) for n in covered])
    for name in names:
        if name in covered:
            i = covered.index(name)
            expected = kept[offsets[i]:offsets[i + 1]] * stats.std[name]
        else:
            expected = np.zeros(len(stats.std[name]))
        np.testing.assert_allclose(direction[name].numpy()[0], expected, atol=1e-6)
    with pytest.raises(SgtoolError, match="not a whole number of StyleGAN2 conv layers"):
        styleclip.global_direction(delta_i_c[:-1], delta_i, loaded.std, 0.1)


def test_text_edits_parse_with_their_own_strength():
    assert styleclip.parse_text_edit("a smiling face") == styleclip.TextEdit("a smiling face", None)
    edit = styleclip.parse_text_edit("a face with glasses=-2.5")
    assert edit == styleclip.TextEdit("a face with glasses", -2.5) and edit.label == "a_face_with_glasses-2.5"
    assert styleclip.parse_text_edit("x=y").prompt == "x=y"
    with pytest.raises(SgtoolError, match="--text expects a prompt"):
        styleclip.parse_text_edit(" =3")


def _payload(marker):
    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    return Payload()


def test_a_hostile_s_stats_pickle_is_refused_without_running_it(tmp_path):
    live, marker = tmp_path / "live", tmp_path / "ran"
    pickle.loads(pickle.dumps(_payload(live)))  # the payload is real: a plain unpickler runs it
    assert live.exists()
    path = tmp_path / "s_stats"
    path.write_bytes(pickle.dumps([{"theta": _payload(marker)}, {}, {}]))
    with pytest.raises(SgtoolError, match=r"refusing to load .*s_stats: it references code '(posix|os)\.system'"):
        styleclip.load_s_stats(path)
    assert not marker.exists()
    path.write_bytes(pickle.dumps({"not": "a layout"}))
    with pytest.raises(SgtoolError, match="neither stylegan3-editing's s_stats"):
        styleclip.load_s_stats(path)


def test_direction_files_in_a_folder_and_for_known_generators(tmp_path):
    with pytest.raises(SgtoolError, match=r"needs delta_i_c.npy \+ s_stats for this stylegan3 generator;"):
        styleclip.files_in(tmp_path, "stylegan3")
    (tmp_path / "fs3.npy").write_bytes(b"")
    (tmp_path / "S_mean_std").write_bytes(b"")
    assert styleclip.files_in(tmp_path, "stylegan2").s_stats.name == "S_mean_std"
    with pytest.raises(SgtoolError, match=r"it holds fs3.npy \+ S_mean_std, which are for stylegan2"):
        styleclip.files_in(tmp_path, "stylegan3")

    def known(config, resolution, hint):
        found = styleclip.known_directions(SimpleNamespace(config_name=config, img_resolution=resolution), hint)
        return found and found.delta_i_c

    assert known("stylegan3-r", 1024, "stylegan3-r-ffhqu-1024x1024.pkl") == "styleclip-sg3-r-ffhqu-1024-delta-i-c"
    assert known("stylegan3-r", 1024, "sg3-r-ffhq-1024.pt") == "styleclip-sg3-r-ffhq-1024-delta-i-c"
    assert known("stylegan3-r", 512, "stylegan3-r-afhqv2-512x512.pkl") == "styleclip-sg3-r-afhq-512-delta-i-c"
    assert known("stylegan2-skip", 1024, "e4e_ffhq_encode.pt") == "styleclip-sg2-ffhq-1024-fs3"
    assert known("stylegan3-t", 1024, "stylegan3-t-ffhq-1024x1024.pkl") is None  # another network
    assert known("stylegan3-r", 1024, "my_cats.pkl") is None
    registry = hub.load_registry()
    for pair in styleclip.KNOWN_DIRECTIONS:
        assert {registry[pair.delta_i_c].kind, registry[pair.s_stats].kind} == {"styleclip"}
    assert registry[clip_text.CLIP_WEIGHTS].kind == "clip" and registry[clip_text.TEMPLATES].kind == "styleclip"
    assert styleclip.default_strength("stylegan3-r-ffhqu") == 5 and styleclip.default_strength("lsun_cars") == 10


# --- the text side ---------------------------------------------------------------------------------

TEMPLATES = ["a bad photo of a {}.", "a sculpture of a {}.", "itap of the {}."]


@pytest.fixture(scope="module")
def vit_b_32(tmp_path_factory):
    """A random open_clip ViT-B-32 saved as safetensors, and the same network loaded back from the file."""
    from safetensors.torch import save_file

    network, _ = random_clip("ViT-B-32", seed=1)
    path = tmp_path_factory.mktemp("clip") / "vit-b-32.safetensors"
    save_file(network.state_dict(), str(path))
    return network, path, clip_text.load_clip(path)


@pytest.mark.slow
def test_clip_from_a_file_and_template_averaged_text_features(vit_b_32, tmp_path):
    network, _path, clip = vit_b_32
    assert all(torch.equal(clip.model.state_dict()[k], v) for k, v in network.state_dict().items())
    templates_file = tmp_path / "templates.txt"
    templates_file.write_text("\n".join(TEMPLATES))  # the reference file has no final newline
    templates = clip_text.load_templates(templates_file)
    assert templates == TEMPLATES

    def averaged(prompt):  # the reference arithmetic, written out
        rows = []
        for template in TEMPLATES:
            with torch.no_grad():
                f = network.encode_text(clip.tokenizer([template.format(prompt)]))[0]
            rows.append(f / f.norm())
        mean = torch.stack(rows).mean(0)
        return mean / mean.norm()

    torch.testing.assert_close(clip.prompt_features("a smiling face", templates), averaged("a smiling face"),
                               atol=1e-5, rtol=0)
    delta = averaged("a smiling face") - averaged("a face")
    direction = clip.text_direction("a smiling face", "a face", templates)
    torch.testing.assert_close(direction, delta / delta.norm(), atol=1e-5, rtol=0)
    assert direction.shape == (512,) and clip.features == 512


def test_templates_file_is_checked(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("a photo of a {}.\n\nno placeholder\n")
    with pytest.raises(SgtoolError, match="one template per line.*'no placeholder'"):
        clip_text.load_templates(path)
    with pytest.raises(SgtoolError, match="does not exist"):
        clip_text.load_templates(tmp_path / "missing.txt")


@pytest.fixture(scope="module")
def tiny_clip():
    return random_clip(TINY_CLIP, seed=2)


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_and_torch_clip_files_load_without_running_code(tiny_clip, tmp_path):
    network, _ = tiny_clip
    scripted = tmp_path / "ViT-tiny.pt"
    torch.jit.save(torch.jit.script(network), str(scripted))
    clip = clip_text.load_clip(scripted, TINY_CLIP)
    assert all(torch.equal(clip.model.state_dict()[k], v) for k, v in network.state_dict().items())
    plain = tmp_path / "state.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in network.state_dict().items()}}, plain)
    assert torch.equal(clip_text.load_clip(plain, TINY_CLIP).model.text_projection, network.text_projection)


def test_hostile_clip_files_are_refused_and_nothing_runs(tiny_clip, tmp_path):
    marker = tmp_path / "ran"
    # A TorchScript-shaped archive whose data.pkl calls os.system.
    archive = tmp_path / "evil_ts.pt"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("evil/data.pkl", pickle.dumps(_payload(marker), protocol=2))
        z.writestr("evil/constants.pkl", pickle.dumps(()))
        z.writestr("evil/code/__torch__.py", "def forward(self): pass\n")
    with pytest.raises(SgtoolError, match="refusing to load CLIP weights .*system"):
        clip_text.load_clip(archive, TINY_CLIP)
    # A torch.save file with the same payload among the tensors.
    pickled = tmp_path / "evil.pt"
    buffer = io.BytesIO()
    torch.save({"visual.proj": torch.zeros(1), "x": _payload(marker)}, buffer)
    pickled.write_bytes(buffer.getvalue())
    with pytest.raises(SgtoolError, match="refusing to load CLIP weights"):
        clip_text.load_clip(pickled, TINY_CLIP)
    assert not marker.exists()
    wrong = tmp_path / "other.safetensors"
    from safetensors.torch import save_file

    save_file({"visual.proj": torch.zeros(2, 2)}, str(wrong))
    with pytest.raises(SgtoolError, match="does not hold .* CLIP weights .*missing"):
        clip_text.load_clip(wrong, TINY_CLIP)


def test_missing_clip_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SGTOOL_HOME", str(tmp_path))
    monkeypatch.setenv("SGTOOL_OFFLINE", "1")
    monkeypatch.delenv("SGTOOL_MODELS_REGISTRY", raising=False)
    with pytest.raises(SgtoolError) as caught:
        clip_text.load_clip(clip_text.CLIP_WEIGHTS)
    message = str(caught.value)
    assert "\n" not in message and "clip-vit-b-32-openai.safetensors" in message and str(tmp_path) in message
