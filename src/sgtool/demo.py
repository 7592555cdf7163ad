"""`make demo`: the main job end to end on the sample portrait, written to a folder with an index.html.

align -> invert -> tune -> edit (SeFa directions, sweep, animation, a text edit) -> expand-fov -> a short video
-> the whole photo edited,
each step run as the real `sgtool` command it documents. With real checkpoints in the model cache
(`sgtool models download ...`) it uses them; otherwise it builds random-weight TEST models (a tiny
StyleGAN3 and a ReStyle-pSp encoder with random weights, LPIPS with a random backbone) and says so:
the pipeline runs end to end, the pictures are not meaningful.
"""

from __future__ import annotations

import html
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel

from .errors import SgtoolError
from .models import build_generator, load_generator, save_generator
from .pipelines.generate import render_seeds
from .utils.io import image_grid, save_image, write_json

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "astronaut.jpg"
REAL_MODELS = {"network": "sg3-editing-generator-ffhq-1024", "encoder": "restyle-e4e-sg3-ffhq"}
REAL_TEXT_FILES = ("clip-vit-b-32-openai", "styleclip-templates", "styleclip-sg3-r-ffhq-1024-delta-i-c",
                   "styleclip-sg3-r-ffhq-1024-s-stats")


@dataclass
class Models:
    network: str
    encoder: str
    test: bool
    extra_set: list[str] = field(default_factory=list)  # --set options the test models need
    clip_args: list[str] | None = None  # the CLIP model's options (None: no CLIP at hand, no text edit)
    template_args: list[str] = field(default_factory=list)  # the prompt templates' (text edits only)


def real_models() -> Models | None:
    """stylegan3-editing's FFHQ StyleGAN3 generator and ReStyle-e4e encoder, when both are in the model cache."""
    from .hub import cached_path, get_entry

    paths = {key: cached_path(get_entry(name)) for key, name in REAL_MODELS.items()}
    if all(p.is_file() for p in paths.values()):
        text_files = [cached_path(get_entry(name)) for name in REAL_TEXT_FILES]
        clip_args = [] if all(p.is_file() for p in text_files) else None  # the registry defaults
        return Models(str(paths["network"]), str(paths["encoder"]), test=False, clip_args=clip_args)
    return None


def build_test_clip(folder: Path) -> tuple[list[str], list[str]]:
    """A random tiny CLIP (clip_text.TINY_TEST_CLIP) and a few prompt templates: the options that use each."""
    from safetensors.torch import save_file

    from .editing.clip_text import TINY_TEST_CLIP, build_clip

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        network, _ = build_clip(TINY_TEST_CLIP)
    save_file(network.state_dict(), str(folder / "test_clip.safetensors"))
    write_json(TINY_TEST_CLIP, folder / "test_clip.json")
    (folder / "templates.txt").write_text("a photo of {}.\na close-up photo of {}.\na portrait of {}.\n")
    return (["--clip", str(folder / "test_clip.json"), "--clip-weights", str(folder / "test_clip.safetensors")],
            ["--set", f"templates={folder / 'templates.txt'}"])


def build_test_models(folder: Path) -> Models:
    """A tiny random StyleGAN3 (16 x 512 styles, 64 px) and a random ReStyle-pSp checkpoint in the
    official layout around it: real code paths, meaningless weights."""
    from .models.encoders.restyle import RESTYLE_ENCODERS

    folder.mkdir(parents=True, exist_ok=True)
    network, encoder = folder / "test_generator.safetensors", folder / "test_restyle_psp.pt"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = build_generator("stylegan3", dict(z_dim=512, w_dim=512, c_dim=0, img_resolution=64,
                                                      img_channels=3, channel_base=2048, channel_max=32,
                                                      mapping_kwargs={"num_layers": 2}))
        with torch.no_grad():
            generator.mapping.w_avg.copy_(generator.mapping(torch.randn(256, 512), None)[:, 0].mean(0))
        save_generator(generator, network, metadata={"note": "sgtool demo test model (random weights)"})
        _, encoder_cls = RESTYLE_ENCODERS["BackboneEncoder"]
        module = encoder_cls(n_styles=generator.num_ws, input_nc=6)
        state = {f"encoder.{k}": v for k, v in module.state_dict().items()}
        state.update({f"decoder.{k}": v for k, v in generator.state_dict().items()})
    torch.save({"state_dict": state, "latent_avg": generator.mapping.w_avg.clone(),
                "opts": {"encoder_type": "BackboneEncoder", "input_nc": 6, "n_iters_per_batch": 2,
                         "output_size": 64}}, encoder)
    clip_args, template_args = build_test_clip(folder)
    return Models(str(network), str(encoder), test=True, clip_args=clip_args, template_args=template_args)


def make_clip(photo: Path, path: Path, seconds: float = 1.5, fps: int = 12, size: int = 256) -> Path:
    """A short clip of the portrait panning slowly, with a 440 Hz tone as its audio."""
    from .pipelines.shared.video_io import ffmpeg_exe

    pan = f"crop={size}:{size}:'32+24*sin(2*PI*t/{seconds})':'24+8*sin(2*PI*t/{seconds})'"
    subprocess.run([ffmpeg_exe(), "-y", "-v", "error", "-loop", "1", "-i", str(photo), "-f", "lavfi", "-i",
                    f"sine=frequency=440:duration={seconds}", "-vf",
                    f"scale={size + 64}:{size + 64},{pan},format=yuv420p",
                    "-t", str(seconds), "-r", str(fps), "-c:v", "libx264", "-c:a", "aac", "-shortest", str(path)],
                   check=True)
    return path


@dataclass
class Step:
    title: str
    about: str
    args: list[str]
    show: list[str]  # output files (relative to the demo folder) shown in index.html
    seconds: float = 0.0


def _run(step: Step, outdir: Path, console: Console) -> None:
    command = [sys.executable, "-m", "sgtool", *step.args]
    console.print(f"[bold]{step.title}[/]: sgtool {' '.join(shlex.quote(a) for a in step.args)}")
    start = time.perf_counter()
    done = subprocess.run(command, cwd=outdir, capture_output=True, text=True)
    step.seconds = time.perf_counter() - start
    (outdir / "logs").mkdir(exist_ok=True)
    (outdir / "logs" / f"{step.title.split()[0].lower()}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise SgtoolError(f"demo step '{step.title}' failed (exit {done.returncode}): {last}")


def _generate_previews(models: Models, outdir: Path) -> list[str]:
    generator = load_generator(models.network)
    folder = outdir / "0_generate"
    samples = render_seeds(generator, range(8), truncation_psi=0.7)
    save_image(image_grid(np.stack([s.image for s in samples]), 8), folder / "samples_grid.png")
    rotated = [next(render_seeds(generator, [0], 0.7, rotate=float(a))).image for a in np.linspace(-45, 45, 7)]
    shifted = [next(render_seeds(generator, [0], 0.7, translate=(float(t), 0.0))).image
               for t in np.linspace(-.3, .3, 7)]
    save_image(image_grid(np.stack(rotated + shifted), 7), folder / "rotate_translate_sweep.png")
    return ["0_generate/samples_grid.png", "0_generate/rotate_translate_sweep.png"]


def plan_steps(models: Models, clip: Path) -> list[Step]:
    net, enc, extra = models.network, models.encoder, models.extra_set
    lpips = ["--set", "lpips_random_backbone=true"] if models.test else []
    tune_lpips = ["--set", "random_lpips_backbone=true"] if models.test else []
    tuned = "3_tune/tuned_generator.safetensors"
    direction = ["--direction", "sefa0=4_edit/sefa/sefa_00.npy"]
    return [
        Step("Align", "Find the face, crop it the FFHQ way, and keep the unaligned crop and its transform.",
             ["align", str(SAMPLE), "--size", "256", "-o", "1_align", *extra],
             ["1_align/astronaut_face0_aligned.png", "1_align/astronaut_face0_crop.png"]),
        Step("Invert", "ReStyle encoder, then a short optimisation from its code (hybrid).",
             ["invert", str(SAMPLE), "--encoder", enc, "--network", net, "--method", "hybrid", "--project-steps",
              "20", "--save-steps", "-o", "2_invert", *lpips, *extra],
             ["2_invert/astronaut_steps.png", "2_invert/astronaut_recon.png",
              "2_invert/astronaut_recon_unaligned.png"]),
        Step("Tune", "Pivotal Tuning: fine-tune the generator around the pivot latent, unaligned crop as target.",
             ["tune", "1_align/astronaut_face0_crop.png", "--latents", "2_invert/astronaut_latent.npy", "--network",
              net, "--transforms", "1_align/alignment.json", "--tune-steps", "20", "-o", "3_tune", *tune_lpips, *extra],
             ["3_tune/astronaut_face0_crop_before.png", "3_tune/astronaut_face0_crop_after.png",
              "3_tune/loss_curve.png"]),
        Step("Discover directions", "SeFa: edit directions from the generator's own weights, no classifier.",
             ["directions", "sefa", "--top", "5", "-n", tuned, "-o", "4_edit/sefa", *extra],
             ["4_edit/sefa/sefa_preview.png"]),
        Step("Edit", "Sweep the strongest direction on the tuned generator (grid and animation).",
             ["edit", "2_invert/astronaut_latent.npy", "-n", tuned, *direction, "--sweep", "sefa0=-6:6:7", "--animate",
              "-o", "4_edit", *extra],
             ["4_edit/sweep_sefa0.png", "4_edit/astronaut_sweep_sefa0.mp4"]),
        *text_steps(models, tuned),
        Step("Expand the field of view", "Render beyond the crop with StyleGAN3's translatable input, edit applied.",
             ["expand-fov", "2_invert/astronaut_latent.npy", "-n", tuned, *direction, "--edit", "sefa0=+4",
              "--all", "16", "-o", "5_expand", *extra],
             ["5_expand/astronaut_sefa0+4_fov.png"]),
        Step("Video", "Track, align, invert, smooth, edit and paste back into every frame; audio kept.",
             ["video", str(clip), "--encoder", enc, "--network", net, *direction, "--edit", "sefa0=+4",
              "--encoder-steps", "1", "-o", "6_video", *extra],
             ["6_video/side_by_side.mp4", "6_video/output.mp4"]),
        Step("Edit the photo", "The whole photo back, every face aligned, inverted, tuned (PTI on its own crop), "
             "edited and pasted in; the rest of the photo untouched.",
             ["edit", str(SAMPLE), "--encoder", enc, "--network", net, *direction, "--edit", "sefa0=+4", "--tune-steps",
              "10", "-o", "7_photo", *(["--set", "pti.lpips_random_backbone=true"] if models.test else []), *extra],
             ["7_photo/astronaut_sefa0+4_side_by_side.png"]),
    ]


def text_steps(models: Models, tuned: str) -> list[Step]:
    """StyleCLIP text edits: the published directions with real models; with the test models, directions built
    for the tuned test generator first (with the random CLIP: the mechanism, not the meaning)."""
    if models.clip_args is None:
        return []
    sweep = ["--sweep", "alpha=-6:6:5"]
    if not models.test:
        return [Step("Text edit", "StyleCLIP global direction for a prompt, swept in strength.",
                     ["edit", "2_invert/astronaut_latent.npy", "-n", models.network, "--text", "a smiling face",
                      *sweep, "-o", "4_edit/text"], ["4_edit/text/sweep_alpha_a_smiling_face.png"])]
    clip = [*models.clip_args, *models.extra_set]
    return [
        Step("Build text directions", "StyleCLIP's s_stats and delta_i_c for this generator (any domain).",
             ["directions", "styleclip", "-n", tuned, "--samples", "2", "--set", "stats_samples=1000",
              *clip, "-o", "4_edit/clip_directions"], []),
        Step("Text edit", "StyleCLIP global direction for a prompt, swept in strength.",
             ["edit", "2_invert/astronaut_latent.npy", "-n", tuned, "--text", "a smiling face", "--directions",
              "4_edit/clip_directions", "--beta", "0.05", *sweep, *clip, *models.template_args, "-o", "4_edit/text"],
             ["4_edit/text/sweep_alpha_a_smiling_face_b0.05.png"]),
    ]


def write_index(outdir: Path, models: Models, previews: list[str], steps: list[Step]) -> Path:
    def media(rel: str) -> str:
        src = html.escape(rel)
        if rel.endswith(".mp4"):
            return f'<video src="{src}" controls loop muted width="320"></video>'
        return f'<a href="{src}"><img src="{src}" style="max-width:100%;image-rendering:pixelated"></a>'

    banner = ("<p class=warn>These results come from random-weight TEST models: the pipeline runs end to end, "
              "the pictures are not faces. Download real checkpoints (<code>sgtool models download "
              f"{REAL_MODELS['network']}</code> and <code>{REAL_MODELS['encoder']}</code>) and run "
              "<code>make demo</code> again.</p>") if models.test else ""
    sections = ["<h2>Generate</h2><p>Seeds and a rotation/translation sweep through the input transform.</p>"
                + "".join(media(p) for p in previews)]
    for step in steps:
        command = html.escape("sgtool " + " ".join(shlex.quote(a) for a in step.args))
        sections.append(f"<h2>{html.escape(step.title)}</h2><p>{html.escape(step.about)} ({step.seconds:.1f} s)</p>"
                        f"<pre>{command}</pre>" + "".join(media(p) for p in step.show if (outdir / p).exists()))
    page = ("<!doctype html><meta charset=utf-8><title>sgtool demo</title><style>body{font-family:sans-serif;"
            "max-width:1100px;margin:auto} pre{background:#eee;padding:8px;white-space:pre-wrap} img,video{margin:4px;"
            "vertical-align:top;max-height:320px} .warn{background:#fd8;padding:8px}</style>"
            f"<h1>sgtool demo</h1><p>Input: <code>{html.escape(str(SAMPLE.name))}</code> (NASA portrait, public "
            f"domain). Generator: <code>{html.escape(models.network)}</code>.</p>{banner}" + "".join(sections))
    path = outdir / "index.html"
    path.write_text(page)
    return path


def run_demo(outdir: Path, console: Console | None = None) -> dict:
    console = console or Console(stderr=True)
    outdir = Path(outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    models = real_models() or build_test_models(outdir / "test_models")
    if models.test:
        console.print(Panel(
            "No real checkpoints in the model cache: running on built-in random-weight TEST models. "
            "Every step runs for real; the pictures are abstract, not faces.\nFor real results: "
            f"sgtool models download {REAL_MODELS['network']} && sgtool models download {REAL_MODELS['encoder']}",
            title="sgtool demo", border_style="yellow"))
    previews = _generate_previews(models, outdir)
    clip = make_clip(SAMPLE, outdir / "clip.mp4")
    steps = plan_steps(models, clip)
    for step in steps:
        _run(step, outdir, console)
    index = write_index(outdir, models, previews, steps)
    record = {"models": vars(models), "steps": [{"title": s.title, "args": s.args, "seconds": round(s.seconds, 2),
                                                "outputs": s.show} for s in steps], "index": str(index)}
    write_json(record, outdir / "demo.json")
    console.print(f"open {index}")
    return record


if __name__ == "__main__":
    try:
        run_demo(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out"))
    except SgtoolError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(2)
