"""Bad input through the CLI, by class: every case ends with exit 2, one line naming the file or setting and
the fix, no traceback, and nothing written. The corpus is built here (no fetched files)."""

from __future__ import annotations

import json
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from support.golden import golden_dir
from sgtool.cli import app
from sgtool.models import build_builtin, save_generator
from sgtool.models.nvidia_pickle import save_nvidia_pickle

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    G = build_builtin("tiny-stylegan3-t")
    files = {"gen": save_generator(G, root / "g.safetensors"), "photo": root / "photo.png",
             "afile": root / "afile", "encoder": golden_dir("encoders") / "BackboneEncoder_ckpt.pt"}
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (64, 64, 3), dtype=np.uint8)).save(files["photo"])
    files["afile"].write_text("not a folder")
    (root / "binary.yaml").write_bytes(bytes(range(256)))
    shape = (G.num_ws, G.w_dim)
    latents = {
        "good": np.zeros(shape, np.float32), "nan": np.full(shape, np.nan, np.float32),
        "inf": np.full(shape, np.inf, np.float32), "text": np.array(["a", "b"]),
        "objects": np.array([[1, 2], [3]], dtype=object), "complex": np.zeros(shape, np.complex64) + 1j,
        "nested": {"a": {"b": np.zeros(3)}}, "empty": {}, "steps": {"x.png": [np.zeros(shape, np.float32)] * 2},
    }
    for name, value in latents.items():
        np.save(root / f"{name}_latent.npy", value, allow_pickle=not isinstance(value, np.ndarray)
                or value.dtype == object)
    # A pickled .npy whose reconstruction calls numpy.dtype with an argument that raises.
    with open(root / "baddtype_latent.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "|O", "fortran_order": False, "shape": ()})
        f.write(b"\x80\x02cnumpy\ndtype\nq\x00X\x07\x00\x00\x00garbageq\x01\x85q\x02Rq\x03.")
    nan_weights = build_builtin("tiny-stylegan3-t")
    with torch.no_grad():
        next(nan_weights.synthesis.parameters()).fill_(float("nan"))
    files["nan_gen"] = save_generator(nan_weights, root / "nan.safetensors")
    return root, files


def _crafted_pickle(root, name: str, **init_kwargs):
    """An NVIDIA pickle of the tiny generator whose recorded constructor arguments are replaced."""
    G = build_builtin("tiny-stylegan3-t")
    G.init_kwargs = {**G.init_kwargs, **init_kwargs}
    return save_nvidia_pickle(G, root / f"{name}.pkl")


def _deep_pickle(root):
    """A network pickle whose init_kwargs hold a list nested 100,000 deep (built from opcodes, no recursion)."""
    import sgtool.models.nvidia_pickle as nvidia

    G = build_builtin("tiny-stylegan3-t")
    G.init_kwargs = {**G.init_kwargs, "mapping_kwargs": {**G.init_kwargs["mapping_kwargs"], "deep": "DEEPMARK"}}
    path = root / "deep.pkl"
    protocol = nvidia.PICKLE_PROTOCOL
    nvidia.PICKLE_PROTOCOL = 3  # unframed, so the marker's bytes can be swapped
    try:
        save_nvidia_pickle(G, path)
    finally:
        nvidia.PICKLE_PROTOCOL = protocol
    marker = b"X\x08\x00\x00\x00DEEPMARK"
    data = path.read_bytes()
    assert marker in data
    path.write_bytes(data.replace(marker, b"]" * 100_000 + b"a" * 99_999))
    return path


def _check(result, code: int, *needles: str):
    text = result.stderr.strip()
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output and "weights_only=False" not in result.output
    assert len(text.splitlines()) == 1, text
    for needle in needles:
        assert needle in text, (needle, text)


# --- 1. unusable output paths ------------------------------------------------------------------------------

OUTPUT_COMMANDS = {
    "generate": lambda f: ["generate", "-n", str(f["gen"]), "--seeds", "0"],
    "align": lambda f: ["align", str(f["photo"])],
    "invert": lambda f: ["invert", str(f["photo"]), "-e", str(f["encoder"])],
    "translate": lambda f: ["translate", str(f["photo"]), "-e", str(f["encoder"])],
    "tune": lambda f: ["tune", str(f["photo"]), "-n", str(f["gen"])],
    "edit": lambda f: ["edit", str(f["photo"].parent / "good_latent.npy"), "-n", str(f["gen"]), "--style",
                       "L0_36_32:0=1"],
    "expand-fov": lambda f: ["expand-fov", str(f["photo"].parent / "good_latent.npy"), "-n", str(f["gen"]),
                             "--all", "8"],
    "video": lambda f: ["video", str(f["photo"]), "-e", str(f["encoder"])],
    "mix": lambda f: ["mix", "--rows", "0", "--cols", "1", "-n", str(f["gen"]), "--layers", "0"],
    "directions sefa": lambda f: ["directions", "sefa", "-n", str(f["gen"])],
    "directions boundary": lambda f: ["directions", "boundary", str(f["photo"].parent / "scores.csv")],
    "directions styleclip": lambda f: ["directions", "styleclip", "-n", str(f["gen"])],
}


@pytest.mark.parametrize("place", ["existing file", "under a file", "unwritable"])
@pytest.mark.parametrize("command", list(OUTPUT_COMMANDS))
def test_unusable_output_folders(corpus, command, place):
    root, files = corpus
    target = {"existing file": files["afile"], "under a file": files["afile"] / "sub", "unwritable": "/proc/x"}[place]
    listing = sorted(p.name for p in root.iterdir())
    _check(runner.invoke(app, [*OUTPUT_COMMANDS[command](files), "-o", str(target)]), 2, "--outdir", str(target))
    assert sorted(p.name for p in root.iterdir()) == listing and files["afile"].read_text() == "not a folder"


@pytest.mark.parametrize("args, needle", [
    (lambda f, r: ["convert", str(f["gen"]), str(f["afile"] / "x.safetensors")], "is a file, not a folder"),
    (lambda f, r: ["convert", str(f["gen"]), "/proc/x.safetensors"], "cannot be written"),
    (lambda f, r: ["convert", str(f["gen"]), str(r)], "is a folder"),
    (lambda f, r: ["merge-manifests", str(r), "-o", str(r)], "is a folder"),
    (lambda f, r: ["align", str(f["photo"]), "-o", str(r / "al"), "--save-transforms", str(r)], "save_transforms"),
    (lambda f, r: ["align", str(f["photo"]), "-o", str(r / "al"), "--save-transforms", str(f["afile"] / "t.npy")],
     "is a file, not a folder"),
])
def test_unusable_output_files(corpus, args, needle):
    root, files = corpus
    listing = sorted(p.name for p in root.iterdir())
    _check(runner.invoke(app, args(files, root)), 2, needle)
    assert sorted(p.name for p in root.iterdir()) == listing


# --- 2. bad setting values ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command, args, needle", [
    ("generate", ["--set", "trunc=abc"], "trunc"),
    ("generate", ["--set", "trunc.x=1"], "trunc"),
    ("generate", ["--set", "outdir=null"], "outdir"),
    ("generate", ["--trunc-cutoff", "-4"], "trunc_cutoff"),
    ("generate", ["--trunc", "nan"], "finite"),
    ("generate", ["--seeds", "-3"], "seeds"),
    ("generate", ["--seeds", "99999999999"], "seeds"),
    ("align", ["--set", "supersample=0"], "supersample"),
    ("align", ["--set", "padding=maybe"], "padding"),
    ("invert", ["--set", "projector=5"], "projector"),
    ("invert", ["--set", "align=perhaps"], "align"),
    ("expand-fov", ["--set", "overlap=lots"], "overlap"),
    ("expand-fov", ["--set", "overlap=2"], "overlap"),
    ("expand-fov", ["--set", "feather=-5"], "feather"),
    ("video", ["--set", "crf=999"], "crf"),
    ("video", ["--set", "tune.lr=fast"], "tune.lr"),
    ("tune", ["--steps", "0"], "steps"),
    ("directions sefa", ["--top", "0"], "top"),
    ("mix", ["--set", "trunc=2"], "trunc"),
    ("edit", ["--sweep", "age=-1:1:100000000"], "COUNT"),
    ("info", ["--arch", "stylegan4"], "arch"),
])
def test_bad_setting_values(corpus, command, args, needle):
    root, files = corpus
    out = root / ("out-" + "-".join(args).replace("=", "_").replace(".", "_"))
    base = OUTPUT_COMMANDS.get(command, lambda f: ["info", str(f["gen"])])(files)
    if command == "edit":
        base = ["edit", str(root / "good_latent.npy"), "-n", str(files["gen"])]
    given_outdir = command == "info" or any(a.startswith("outdir=") for a in args)
    _check(runner.invoke(app, [*base, *args] + ([] if given_outdir else ["-o", str(out)])), 2, needle)
    assert not out.exists() and not (root.parent / "out").exists()


@pytest.mark.parametrize("which, needle", [("dir", "is a directory"), ("binary", "not a text file")])
def test_config_that_is_not_a_yaml_file(corpus, which, needle):
    root, files = corpus
    config = root if which == "dir" else root / "binary.yaml"
    _check(runner.invoke(app, ["generate", "-n", str(files["gen"]), "--config", str(config),
                               "-o", str(root / "out-config")]), 2, needle, str(config))


# --- 3 and 4. non-finite numbers and latent files of the wrong content --------------------------------------

BAD_LATENTS = {"nan": "NaN or infinite", "inf": "NaN or infinite", "text": "holds text", "objects": "Python objects",
               "complex": "complex numbers", "nested": "nested dict", "empty": "empty dict",
               "baddtype": "not a readable .npy"}


@pytest.mark.parametrize("command", ["edit", "expand-fov", "tune"])
@pytest.mark.parametrize("kind", list(BAD_LATENTS))
def test_latent_files_of_the_wrong_content(corpus, command, kind):
    root, files = corpus
    latent = root / f"{kind}_latent.npy"
    out = root / f"out-{command}-{kind}"
    args = {"edit": ["edit", str(latent), "-n", str(files["gen"]), "--style", "L0_36_32:0=1"],
            "expand-fov": ["expand-fov", str(latent), "-n", str(files["gen"]), "--all", "8"],
            "tune": ["tune", str(files["photo"]), "-n", str(files["gen"]), "--latents", str(latent),
                     "--set", "lpips_random_backbone=true"]}[command]
    _check(runner.invoke(app, [*args, "-o", str(out)]), 2, BAD_LATENTS[kind], latent.name)
    assert not out.exists() or not any(out.iterdir())


def test_a_step_beyond_the_dict_and_a_folder_as_latent(corpus):
    root, files = corpus
    _check(runner.invoke(app, ["edit", str(root / "steps_latent.npy"), "-n", str(files["gen"]), "--step", "7",
                               "--style", "L0_36_32:0=1", "-o", str(root / "out-step")]), 2, "--step 7")
    _check(runner.invoke(app, ["edit", str(root), "-n", str(files["gen"]), "--style", "L0_36_32:0=1",
                               "-o", str(root / "out-dir")]), 2, "is a directory")


def test_generator_with_nan_weights_is_refused(corpus):
    root, files = corpus
    for args in (["generate", "-n", str(files["nan_gen"]), "-o", str(root / "out-nan")],
                 ["info", str(files["nan_gen"])]):
        _check(runner.invoke(app, args), 2, "NaN or infinite", "nan.safetensors")
    assert not (root / "out-nan").exists()


# --- 5. crafted checkpoints ---------------------------------------------------------------------------------

@pytest.mark.parametrize("craft, needle", [
    (lambda root: _deep_pickle(root), "nest deeper"),
    (lambda root: _crafted_pickle(root, "huge", z_dim=2 ** 21, w_dim=2 ** 21), "z_dim=2097152"),
    (lambda root: _crafted_pickle(root, "negative", z_dim=-5), "z_dim=-5"),
])
@pytest.mark.parametrize("command", ["info", "convert"])
def test_crafted_checkpoints(corpus, craft, needle, command):
    root, _ = corpus
    path = craft(root)
    args = ["info", str(path)] if command == "info" else ["convert", str(path), str(root / "crafted.safetensors")]
    _check(runner.invoke(app, args), 2, needle, path.name)
    assert not (root / "crafted.safetensors").exists()


# --- 7. misleading messages ---------------------------------------------------------------------------------

def test_encoder_without_its_decoder_given_as_generator_says_so(corpus):
    import torch

    root, files = corpus
    checkpoint = torch.load(files["encoder"], map_location="cpu", weights_only=False)
    checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")}
    torch.save(checkpoint, root / "encoder_only.pt")
    for args in (["generate", "-n", str(root / "encoder_only.pt"), "-o", str(root / "out-enc")],
                 ["info", str(root / "encoder_only.pt")]):
        _check(runner.invoke(app, args), 2, "encoder checkpoint without its decoder's weights")


def test_payload_inside_weight_bytes_is_refused_as_code(corpus, tmp_path):
    import io

    root, files = corpus
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (shutil.copyfile, (str(files["afile"]), str(marker)))

    buffer = io.BytesIO()
    pickle.dump(Payload(), buffer, protocol=2)
    payload = buffer.getvalue()
    path = save_nvidia_pickle(build_builtin("tiny-stylegan3-t"), tmp_path / "payload.pkl")
    data = path.read_bytes()
    # Overwrite the start of the first nested storage stream (torch's legacy format opens with its magic number)
    # with the payload; its length, and so the pickle's framing, stays the same.
    start = data.index(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19")
    path.write_bytes(data[:start] + payload + data[start + len(payload):])
    _check(runner.invoke(app, ["info", str(path)]), 2, "refusing to load", "shutil.copyfile")
    assert not marker.exists()


# --- 8. consistency -----------------------------------------------------------------------------------------

def test_audio_only_file_is_not_a_video(corpus, tmp_path):
    import subprocess

    from sgtool.pipelines.shared.video_io import ffmpeg_exe

    root, files = corpus
    audio = tmp_path / "tone.mp4"
    subprocess.run([ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-c:a", "aac", str(audio)], check=True)
    _check(runner.invoke(app, ["video", str(audio), "-e", str(files["encoder"]), "-o", str(tmp_path / "v")]), 2,
           "no video stream")


def test_edit_syntax_is_checked_before_any_work(corpus, tmp_path):
    root, files = corpus
    _check(runner.invoke(app, ["video", str(files["photo"]), "-e", str(files["encoder"]), "--edit", "age",
                               "-o", str(tmp_path / "v")]), 2, "age")
    assert not (tmp_path / "v").exists()


def test_sgtools_own_warnings_print_as_one_line_and_others_as_python_prints_them(monkeypatch):
    import warnings
    from pathlib import Path

    import sgtool
    from sgtool import cli

    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)  # put back after the test
    cli._one_line_warnings()
    ours = str(Path(sgtool.__file__).parent / "pipelines" / "project.py")
    message = "sgtool: projector.precision bf16: no bf16 here; using float32"
    assert warnings.formatwarning(message, RuntimeWarning, ours, 114, "line") == f"{message}\n"
    theirs = warnings.formatwarning("a library's own warning", UserWarning, "/elsewhere/lib.py", 3, "x = 1")
    assert theirs.startswith("/elsewhere/lib.py:3: UserWarning: a library's own warning\n")


@pytest.mark.parametrize("name", ["photo[1]_latent.npy", "a[/x]_latent.npy", "[bold]_latent.npy"])
def test_messages_keep_square_brackets_of_file_names(corpus, name):
    root, files = corpus
    result = runner.invoke(app, ["edit", str(root / name), "-n", str(files["gen"]), "--edit", "x=1",
                                 "-o", str(root / "out-brackets")])
    _check(result, 2, name)


# --- second round: configs, ranges, mixing, run listings, links -------------------------------------------------

@pytest.mark.parametrize("content, needle", [
    ("a: &a [x, x, x, x]\nb: &b [*a, *a, *a, *a]\nc: &c [*b, *b, *b, *b]\ntrunc: [*c, *c, *c]\n", "aliases"),
    ("trunc: " + "[" * 20000 + "]" * 20000 + "\n", "nested deeper than"),
    ("trunc: 0.5\n" + "# padding\n" * 200_000, "larger than"),
])
def test_config_bombs_are_one_line(corpus, content, needle):
    root, files = corpus
    config = root / f"bomb-{needle.split()[0]}.yaml"
    config.write_text(content)
    _check(runner.invoke(app, ["generate", "-n", str(files["gen"]), "--config", str(config),
                               "-o", str(root / "out-bomb")]), 2, needle, config.name)
    assert not (root / "out-bomb").exists()


def test_a_device_as_config_is_refused_without_reading_it(corpus):
    root, files = corpus
    _check(runner.invoke(app, ["generate", "-n", str(files["gen"]), "--config", "/dev/zero",
                               "-o", str(root / "out-zero")]), 2, "/dev/zero is not a regular file")


@pytest.mark.parametrize("args, needle", [
    (["edit", "photo.png", "-e", "enc.pt", "--face", "0-4000000000"], "goes past 99999"),
    (["mix", "--rows", "0", "--cols", "1", "--layers", "0-4000000000"], "goes past 99999"),
])
def test_huge_index_ranges_are_refused_before_allocation(corpus, args, needle):
    root, files = corpus
    _check(runner.invoke(app, [*args, "-n", str(files["gen"]), "-o", str(root / "out-range")]), 2, needle)


def test_mixing_a_latent_with_itself_is_the_identity_and_a_huge_dict_is_refused(corpus):
    root, files = corpus
    good = str(root / "good_latent.npy")
    result = runner.invoke(app, ["mix", good, good, "-n", str(files["gen"]), "--layers", "0-3", "-o",
                                 str(root / "out-identity"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert (root / "out-identity" / "good_mix_good.png").is_file()
    shape = np.load(good).shape
    np.save(root / "many_latent.npy", np.array({f"{k}.png": np.zeros(shape, np.float32) for k in range(300)},
                                                dtype=object), allow_pickle=True)
    _check(runner.invoke(app, ["mix", str(root / "many_latent.npy"), good, "-n", str(files["gen"]), "--layers", "0",
                               "-o", str(root / "out-many"), "--device", "cpu"]), 2, "at most 32 per side")


def test_run_listing_shows_crafted_records_as_text(corpus):
    root, _ = corpus
    run = root / "runs" / "[bold]x"
    run.mkdir(parents=True)
    (run / "run.json").write_text(json.dumps({"arch": "[red]e4e", "settings": {}, "status": {"a": 1},
                                              "step": "many", "best_val_loss": "low"}))
    result = runner.invoke(app, ["models", "list", "--runs", str(root / "runs")])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "[red]e4e" in result.stdout and "[bold]x" in result.stdout


@pytest.mark.parametrize("kind", ["dangling", "loop"])
def test_a_broken_link_as_outdir_is_one_line(corpus, kind):
    root, files = corpus
    link = root / f"link-{kind}"
    if kind == "dangling":
        link.symlink_to(root / "nowhere" / "x")
    else:
        link.symlink_to(root / f"link-{kind}-2")
        (root / f"link-{kind}-2").symlink_to(link)
    _check(runner.invoke(app, ["generate", "-n", str(files["gen"]), "-o", str(link)]), 2, "fix or remove the link")


@pytest.mark.parametrize("content, needle", [
    ("not json", "is not a train-encoder record"), ("[1, 2]", "is not a train-encoder record"),
    ('{"arch": "e4e"}', "is not a train-encoder record"),
    ('{"settings": {"arch": "e4e", "lr": "fast"}}', "the setting lr recorded in"),
])
def test_resuming_from_a_crafted_run_record_is_one_line(corpus, content, needle):
    root, _ = corpus
    run = root / f"run-{abs(hash(content))}"
    run.mkdir()
    (run / "run.json").write_text(content)
    before = (run / "run.json").read_text()
    _check(runner.invoke(app, ["train-encoder", "--resume", str(run), "--device", "cpu"]), 2, needle)
    assert (run / "run.json").read_text() == before and sorted(p.name for p in run.iterdir()) == ["run.json"]


@pytest.mark.parametrize("photos, needle", [(["/"], "is not a photo file"), (["../*"], "is not a photo file"),
                                            ([3], "is not a photo file")])
def test_a_crafted_photo_record_is_one_line(corpus, photos, needle):
    root, files = corpus
    folder = root / f"photo-run-{abs(hash(str(photos)))}"
    folder.mkdir()
    (folder / "photo_edits.json").write_text(json.dumps({"photos": photos, "settings": {}}))
    _check(runner.invoke(app, ["edit", str(folder), "--edit", "x=1"]), 2, needle, "photo_edits.json")


def test_a_photo_record_with_text_where_numbers_belong_is_one_line(corpus):
    root, files = corpus
    folder = root / "photo-run-text"
    folder.mkdir()
    (folder / "photo_edits.json").write_text(json.dumps({"photos": [str(files["photo"])],
                                                        "settings": {"jpeg_quality": "best"}}))
    _check(runner.invoke(app, ["edit", str(folder), "--edit", "x=1"]), 2, "recorded setting jpeg_quality")


@pytest.mark.parametrize("args, needle", [
    (["edit", "good_latent.npy", "--text", "x=1e39"], "between -100 and 100"),
    (["train-encoder", "--synthetic", "--width", "1e-6"], "setting width"),
])
def test_absurd_strengths_and_widths_are_refused(corpus, args, needle):
    root, files = corpus
    args = [str(root / a) if a.endswith(".npy") else a for a in args]
    _check(runner.invoke(app, [*args, "-n", str(files["gen"]), "-o", str(root / "out-absurd")]), 2, needle)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header says width x height and whose pixel data is garbage."""
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"not zlib data") + chunk(b"IEND", b""))


@pytest.mark.parametrize("size, needle", [(100_000, "more pixels than an image can decode safely"),
                                          (5000, "more than 16 megapixels")])
def test_train_encoder_refuses_decompression_bombs_before_training(corpus, size, needle):
    root, files = corpus
    data = root / f"bomb-data-{size}"
    data.mkdir()
    (data / "bomb.png").write_bytes(_png_header(size, size))
    _check(runner.invoke(app, ["train-encoder", "-n", str(files["gen"]), "--data", str(data), "--device", "cpu",
                               "-o", str(root / f"run-bomb-{size}")]), 2, needle, "bomb.png")
    assert not (root / f"run-bomb-{size}").exists()


def test_train_encoder_on_images_that_all_fail_to_decode_is_one_line(corpus):
    root, files = corpus
    data = root / "undecodable"
    data.mkdir()
    for k in range(4):  # valid headers, no pixel data: the scan passes, the workers cannot decode them
        (data / f"{k}.png").write_bytes(_png_header(64, 64))
    result = runner.invoke(app, ["train-encoder", "-n", str(files["gen"]), "--data", str(data), "--arch", "psp",
                                 "--width", "0.0625", "--backbone-init", "random", "--input-size", "64",
                                 "--workers", "1", "--batch-size", "2", "--steps", "1", "--id-loss", "none",
                                 "--set", "lpips_random_backbone=true", "--device", "cpu",
                                 "-o", str(root / "run-undecodable")])
    _check(result, 2, "images in a row failed to decode")


def test_a_batch_that_cannot_fit_is_refused_with_an_estimate(corpus):
    root, files = corpus
    _check(runner.invoke(app, ["train-encoder", "-n", str(files["gen"]), "--synthetic", "--batch-size", "65536",
                               "--backbone-init", "random", "--width", "0.0625", "--device", "cpu",
                               "-o", str(root / "run-huge-batch")]), 2, "GiB", "lower --batch-size")
    assert not (root / "run-huge-batch").exists()


@pytest.mark.parametrize("name", ["photo[1]", "a[/x]", "[bold]b"])
def test_outputs_named_with_square_brackets_are_printed_as_they_are(corpus, name):
    root, files = corpus
    latent = root / f"{name}_latent.npy"  # a[/x]: the file x]_latent.npy in the folder a[
    latent.parent.mkdir(exist_ok=True)
    shutil.copy(root / "good_latent.npy", latent)
    out = root / f"out-{name}"
    result = runner.invoke(app, ["edit", str(latent), "-n", str(files["gen"]), "--style", "L0_36_32:0=1",
                                 "-o", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert f"into {out}/" in result.stderr.replace("\n", "")


def test_records_nested_too_deeply_are_one_line(corpus):
    root, files = corpus
    deep = root / "alignment.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    _check(runner.invoke(app, ["edit", str(root / "good_latent.npy"), "-n", str(files["gen"]), "--style",
                               "L0_36_32:0=1", "--transforms", str(deep), "-o", str(root / "out-deep")]), 2,
           "nested too deeply")
    assert not (root / "out-deep").exists()
