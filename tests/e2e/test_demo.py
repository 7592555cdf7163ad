"""`make demo`'s pieces: offline test models that the real loaders accept, the sample clip, the index page."""

import json

import torch

from sgtool.demo import SAMPLE, Step, build_test_models, make_clip, plan_steps, write_index
from sgtool.models import load_generator
from sgtool.pipelines.invert import load_encoder
from sgtool.pipelines.shared.video_io import audio_streams, count_frames


def test_test_models_load_through_the_product_loaders(tmp_path):
    models = build_test_models(tmp_path)
    assert models.test
    generator = load_generator(models.network)
    encoder = load_encoder(models.encoder)
    steps = encoder.invert(torch.zeros(1, 3, 256, 256), steps=1)
    assert steps[0].latents.shape == (1, generator.num_ws, generator.w_dim)


def test_sample_clip_and_index(tmp_path):
    assert SAMPLE.is_file()
    clip = make_clip(SAMPLE, tmp_path / "clip.mp4", seconds=0.5, fps=8, size=96)
    assert count_frames(clip) == 4 and audio_streams(clip)
    models = build_test_models(tmp_path / "models")
    steps = plan_steps(models, clip)
    assert [s.args[0] for s in steps] == ["align", "invert", "tune", "directions", "edit", "directions", "edit",
                                         "expand-fov", "video", "edit"]
    (tmp_path / "1_align").mkdir()
    (tmp_path / "1_align" / "x.png").write_bytes(b"")
    steps = [Step("Align", "about <it>", ["align", "a b.jpg"], ["1_align/x.png", "1_align/missing.png"], 1.5)]
    page = write_index(tmp_path, models, [], steps).read_text()
    assert "TEST models" in page and "sgtool align &#x27;a b.jpg&#x27;" in page and "about &lt;it&gt;" in page
    assert "1_align/x.png" in page and "missing.png" not in page
    json.dumps(models.__dict__)
