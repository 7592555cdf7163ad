"""`sgtool tune` (PTI) on the golden 64 px StyleGAN3 fixture: fit, locality, saving, resuming."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from support.golden import golden_dir
from sgtool import kernels
from sgtool.errors import SgtoolError
from sgtool.losses import load_lpips
from sgtool.models import load_generator
from sgtool.pipelines.shared.memory import activation_checkpointing
from sgtool.pipelines.tune import (
    CHECKPOINT_NAME,
    PivotalTuner,
    TuneSettings,
    TuneTarget,
    evaluate,
    tune_and_save,
    tunable_parameters,
    tune_paths,
)
from sgtool.pipelines.shared.memory import layers_to_recompute, recomputable_bytes
from sgtool.progress import Reporter
from sgtool.utils.io import save_image

# Small, fast settings: PTI's losses and its (optional) locality regulariser, a larger step size so tens of
# steps suffice.
FAST = dict(lr=2e-3, lpips_threshold=0.0, lpips_random_backbone=True, locality=True)


@contextlib.contextmanager
def one_thread():
    # Tiny tensors: thread hand-offs cost more than they save on a shared CPU. Reference ops: the
    # resume test compares weights bit for bit.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with kernels.use("ref"):
            yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _quiet_cpu():
    with one_thread():
        yield


def latent_for_seed(G, seed, psi=0.7):
    z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float()
    with torch.no_grad():
        return G.mapping(z, None, truncation_psi=psi)[0]


@pytest.fixture(scope="module")
def golden_g():
    return load_generator(golden_dir("generators") / "sg3t_64.pkl")


@pytest.fixture(scope="module")
def lpips_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return load_lpips("alex", random_backbone=True)


@pytest.fixture(scope="module")
def foreign_images():
    """Renders of a different network (sg3r_64): images sg3t_64 cannot produce exactly."""
    io = np.load(golden_dir("generators") / "sg3r_64_io.npz")
    return torch.from_numpy(io["img"]).float()


@pytest.fixture(scope="module")
def target(golden_g, foreign_images):
    return TuneTarget(name="portrait", image=foreign_images[0], latent=latent_for_seed(golden_g, 1))


@pytest.fixture(scope="module")
def tuned(golden_g, target, lpips_model, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("tune")
    with one_thread():
        summary = tune_and_save(golden_g, [target], TuneSettings(steps=10, **FAST), outdir, network="sg3t_64",
                                export_pkl=True, lpips_model=lpips_model)
    return summary


def mean_change(G_new, G_old, ws):
    with torch.no_grad():
        return float((G_new.synthesis(ws) - G_old.synthesis(ws)).abs().mean())


def test_pti_fits_the_target_and_leaves_far_latents_alone(golden_g, target, tuned, lpips_model):
    before, after = tuned["images"][0]["before"], tuned["images"][0]["after"]
    assert tuned["steps_done"] == 10 and not tuned["stopped_early"]
    assert before["mse"] / after["mse"] >= 3.0
    assert after["lpips"] < 0.5 * before["lpips"]
    G = tuned["generator"]
    # The recorded metrics are those of the generator that was returned.
    _, metrics = evaluate(G, [target], lpips_model, "cpu")
    assert metrics[0]["mse"] == pytest.approx(after["mse"], rel=1e-5)

    pivot = target.latent[None]
    far = golden_g.mapping(torch.from_numpy(np.random.RandomState(7).randn(8, golden_g.z_dim)).float(), None)
    pivot_change = mean_change(G, golden_g, pivot)
    assert mean_change(G, golden_g, far) < 0.5 * pivot_change

    # Only the synthesis layers moved: mapping and StyleGAN3's Fourier input stay as they were.
    tuned_state, original_state = G.state_dict(), golden_g.state_dict()
    for name in original_state:
        same = torch.equal(tuned_state[name], original_state[name])
        frozen = name.startswith(("mapping.", "synthesis.input."))
        if frozen:
            assert same, name
    tunable = {name for name, _ in tunable_parameters(G)}
    assert any(not torch.equal(tuned_state[n], original_state[n]) for n in tunable)
    assert not any(p.requires_grad for p in G.parameters())


def test_outputs_reload_and_render_identically(golden_g, target, tuned):
    outdir = Path(tuned["outdir"])
    record = json.loads((outdir / "tune.json").read_text())
    assert record["images"][0]["after"] == tuned["images"][0]["after"]
    assert record["settings"]["steps"] == 10 and record["settings"]["locality_alpha"] == 30.0
    assert record["settings"]["precision"] == "auto" and record["precision_used"] in ("fp32", "bf16")
    assert record["recomputed_layers"] == []  # 64 px: everything fits
    assert len(record["history"]) == 10 and record["history"][-1]["step"] == 10
    assert not (outdir / CHECKPOINT_NAME).exists()
    for name in ("portrait_before.png", "portrait_after.png", "loss_curve.png"):
        with Image.open(outdir / name) as img:
            assert img.size[0] > 0
    with Image.open(outdir / "portrait_after.png") as img:
        assert img.size == (64, 64)

    G = tuned["generator"]
    ws = torch.cat([target.latent[None], latent_for_seed(golden_g, 3)[None]])
    with torch.no_grad():
        expected = G.synthesis(ws)
        for file in ("tuned_generator.safetensors", "tuned_generator.pkl"):
            reloaded = load_generator(outdir / file)
            assert torch.equal(reloaded.synthesis(ws), expected), file
            assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), G.state_dict().values()))
    assert load_generator(outdir / "tuned_generator.safetensors").extra_metadata["steps"] == 10


def test_interrupted_joint_run_resumes_to_the_same_weights(golden_g, foreign_images, lpips_model, tmp_path):
    targets = [TuneTarget(name=f"frame{i}", image=foreign_images[i], latent=latent_for_seed(golden_g, 10 + i))
               for i in range(3)]
    settings = TuneSettings(steps=4, batch_size=2, seed=5, **FAST)
    checkpoint = tmp_path / CHECKPOINT_NAME
    with one_thread():
        straight = PivotalTuner(golden_g, targets, settings, lpips_model=lpips_model).run()
        first = PivotalTuner(golden_g, targets, settings, lpips_model=lpips_model).run(
            checkpoint, should_stop=lambda step: step >= 2)
        assert first.interrupted and first.steps_done == 2 and checkpoint.is_file()
        second = PivotalTuner(golden_g, targets, settings, lpips_model=lpips_model).run(checkpoint)
    assert second.resumed_from == 2 and second.steps_done == 4 and not second.interrupted
    assert [r["loss"] for r in second.history] == [r["loss"] for r in straight.history]
    for name, value in straight.generator.state_dict().items():
        assert torch.equal(second.generator.state_dict()[name], value), name
    # Mini-batches cover every frame and differ between passes.
    probe = PivotalTuner(golden_g, targets, settings, lpips_model=lpips_model)
    seen = [probe.batch_indices(s).tolist() for s in range(4)]
    assert sorted(seen[0] + seen[1]) == [0, 1, 2] and sorted(seen[2] + seen[3]) == [0, 1, 2]

    # A checkpoint only resumes the run that wrote it.
    other = PivotalTuner(golden_g, targets, TuneSettings(steps=4, batch_size=2, seed=6, **FAST),
                         lpips_model=lpips_model)
    with pytest.raises(SgtoolError, match="--no-resume"):
        other.run(checkpoint)
    with pytest.raises(SgtoolError, match="no checkpoint"):
        other.run(tmp_path / "missing.pt", resume=True)


def test_lpips_threshold_stops_before_any_update(golden_g, target, lpips_model):
    settings = TuneSettings(steps=5, lr=1e-3, lpips_threshold=10.0, lpips_random_backbone=True)
    result = PivotalTuner(golden_g, [target], settings, lpips_model=lpips_model).run()
    assert result.stopped_early and result.steps_done == 0
    assert all(torch.equal(a, b) for a, b in zip(result.generator.state_dict().values(),
                                                 golden_g.state_dict().values()))


def test_stylegan2_tunes_all_synthesis_layers(lpips_model, foreign_images):
    G = load_generator(golden_dir("generators") / "sg2_64.pkl")
    target = TuneTarget(name="x", image=foreign_images[1], latent=latent_for_seed(G, 2))
    names = {name for name, _ in tunable_parameters(G)}
    assert names == {f"synthesis.{n}" for n, _ in G.synthesis.named_parameters()}
    with one_thread():
        tuner = PivotalTuner(G, [target], TuneSettings(steps=3, **FAST), lpips_model=lpips_model)
        losses = [tuner.step()["loss"] for _ in range(3)]
    assert tuner.step_index == 3 and all(np.isfinite(losses))
    with pytest.raises(SgtoolError, match="StyleGAN3"):
        PivotalTuner(G, [TuneTarget("x", target.image, target.latent, transform=torch.eye(3))], TuneSettings(),
                     lpips_model=lpips_model)


def test_bad_targets_are_refused_with_one_line(golden_g, target, lpips_model):
    wrong = TuneTarget(name="x", image=target.image, latent=torch.zeros(3, golden_g.w_dim), source="x_latent.npy")
    with pytest.raises(SgtoolError, match=r"x_latent.npy: latent has shape \[3, 32\]"):
        PivotalTuner(golden_g, [wrong], TuneSettings(), lpips_model=lpips_model)
    with pytest.raises(ValidationError, match="batch_size"):
        TuneSettings(batch_size=0)


@pytest.mark.parametrize("name", ["sg3r_64", "sg2_64"])
def test_memory_saving_synthesis_matches_the_plain_one(name):
    G = load_generator(golden_dir("generators") / f"{name}.pkl").requires_grad_(True)
    ws = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(0)), None).detach()

    def images_and_grads(saving):
        G.zero_grad()
        # A tiny budget forces StyleGAN3 layers into chunks of a few output channels.
        with activation_checkpointing(G, saving, chunk_bytes=200_000):
            images = G.synthesis(ws)
            images.square().mean().backward()
        return images.detach(), [p.grad.clone() for p in G.synthesis.parameters()]

    plain_images, plain_grads = images_and_grads(False)
    saved_images, saved_grads = images_and_grads(True)
    assert (plain_images - saved_images).abs().max() < 1e-5
    for plain, saved in zip(plain_grads, saved_grads):
        assert (plain - saved).abs().max() <= 1e-4 * plain.abs().max() + 1e-9
    assert all("forward" not in vars(child) for child in G.synthesis.children())  # wrappers removed


def test_checkpointing_picks_the_fewest_largest_layers():
    sizes = {"a": 5, "b": 40, "c": 10, "d": 30}
    assert layers_to_recompute(sizes, 100) == []  # everything fits: nothing recomputed
    assert layers_to_recompute(sizes, 50) == ["b"]  # 85 -> 45
    assert layers_to_recompute(sizes, 10) == ["b", "d", "c"]  # 85 -> 45 -> 15 -> 5
    assert layers_to_recompute(sizes, None) == ["a", "b", "c", "d"]  # memory unknown: every layer


def test_auto_checkpointing_recomputes_only_where_memory_needs_it(golden_g, target, lpips_model, monkeypatch):
    import sgtool.pipelines.tune.pti as pti

    settings = TuneSettings(steps=2, **FAST)
    sizes = recomputable_bytes(golden_g, 1, False, "cpu")  # these tests run the reference ops
    largest = max(sizes, key=sizes.get)
    monkeypatch.setattr(pti, "available_memory", lambda device: 2 * (sum(sizes.values()) - sizes[largest]))
    tight = PivotalTuner(golden_g, [target], settings, lpips_model=lpips_model)
    assert tight.recomputed_layers == [largest]  # the locality pass has batch 1 here, as the main one
    monkeypatch.setattr(pti, "available_memory", lambda device: 2 * sum(sizes.values()))
    roomy = PivotalTuner(golden_g, [target], settings, lpips_model=lpips_model)
    assert roomy.recomputed_layers == []
    forced = PivotalTuner(golden_g, [target], TuneSettings(steps=2, checkpoint_activations=True, **FAST),
                          lpips_model=lpips_model)
    assert forced.recomputed_layers == list(sizes)
    # Recomputing is exact: the same losses and weights after two steps.
    for _ in range(2):
        records = [tuner.step() for tuner in (tight, roomy, forced)]
        assert records[0]["loss"] == pytest.approx(records[1]["loss"], rel=1e-5) == records[2]["loss"]
    for a, b in zip(tight.params, roomy.params):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_non_finite_loss_stops_with_the_last_good_state(golden_g, target, lpips_model, tmp_path):
    class TurnsNaN(torch.nn.Module):
        """LPIPS that goes NaN from its fourth call on: the evaluation before tuning, then two calls a step."""

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, a, b):
            self.calls += 1
            value = lpips_model(a, b)
            return value * float("nan") if self.calls > 3 else value

    with one_thread(), pytest.raises(SgtoolError, match=r"loss became nan at step 2; stopped, the last good state "
                                                        r"\(step 1\)"):
        tune_and_save(golden_g, [target], TuneSettings(steps=10, save_every=1, **FAST), tmp_path,
                      lpips_model=TurnsNaN())
    assert not (tmp_path / "tuned_generator.safetensors").exists() and not (tmp_path / "tune.json").exists()
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert state["step"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in state["generator"].values() if v.is_floating_point())


class CtrlCDuring(Reporter):
    """Presses Ctrl-C once, at the first step of the first task whose label starts with `label`."""

    def __init__(self, label: str):
        self.label, self.tasks, self.pressed = label, [], False

    def start(self, label, total=None):
        self.tasks.append(label)

    def advance(self, count=1, info=""):
        if not self.pressed and self.tasks and self.tasks[-1].startswith(self.label):
            self.pressed = True
            signal.raise_signal(signal.SIGINT)

    def finish(self):
        self.tasks.pop()


def test_ctrl_c_finishes_the_step_keeps_a_checkpoint_and_the_same_command_resumes(foreign_images, tmp_path,
                                                                                   monkeypatch):
    from sgtool.pipelines.invert import run as invert

    folder = tmp_path / "photos"
    for i, name in enumerate(("a", "b")):
        save_image(foreign_images[i], folder / f"{name}.png")
    settings = TuneSettings(network=str(golden_dir("generators") / "sg3t_64.pkl"), outdir=tmp_path / "out", align=False,
                            steps=3, device="cpu", **{**FAST, "locality": False})
    settings.invert.project_steps = 1
    inversions = []
    real = invert.invert_target
    monkeypatch.setattr(invert, "invert_target", lambda *a, **k: inversions.append(1) or real(*a, **k))

    first = tune_paths(folder, settings, reporter=CtrlCDuring("tuning a"))
    assert first["exit_code"] == 130
    assert [(i["name"], i["status"]) for i in first["items"]] == [("a", "not_run"), ("b", "not_run")]
    out = tmp_path / "out"
    assert torch.load(out / "a" / CHECKPOINT_NAME, weights_only=True)["step"] == 1  # the step was finished
    assert (out / "a" / "a_latent.npy").is_file() and not (out / "b").exists()

    second = tune_paths(folder, settings)
    assert second["exit_code"] == 0 and [i["status"] for i in second["items"]] == ["ok", "ok"]
    assert [i["resumed_from_step"] for i in second["items"]] == [1, None]
    assert [i["steps_done"] for i in second["items"]] == [3, 3]
    assert len(inversions) == 2  # a's pivot was reused with its checkpoint, b was inverted once
    assert not (out / "a" / CHECKPOINT_NAME).exists()
    record = json.loads((out / "tune.json").read_text())
    assert record["counts"]["ok"] == 2 and str(out / "a" / "a_latent.npy") in record["items"][0]["outputs"]
