"""Settings of `sgtool video` and `sgtool expand-fov`: the clip's cached stages and what is rendered from them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

from pydantic import BeforeValidator, Field, model_validator

from .base import Cli, Renamed, Settings
from .commands import Outdir, PtiOptions, outdir_field
from .common import (EditOptions, EncoderRef, GeneratorRef, IndexList, InversionOptions, Mask, Runtime, Smoothing,
                     split_commas)

VIDEO_OUTPUTS = ("output", "input_crops", "recon", "edited", "side_by_side")


class ClipOptions(Settings):
    """How a clip is read, tracked, aligned, inverted and smoothed (the cached stages before rendering)."""

    start: Annotated[float, Cli()] = Field(0.0, ge=0, description="start time in seconds")
    end: Annotated[float | None, Cli()] = Field(None, gt=0, description="end time in seconds (null: the end)")
    max_frames: Annotated[int | None, Cli()] = Field(None, ge=1, description="process at most N frames")
    fps: Annotated[float | None, Cli()] = Field(None, gt=0, le=1000, description="resample the clip to this "
                                                "frame rate (null: keep the source's)")
    face: Annotated[int, Cli(hidden=("--face-index",)), Renamed("face_index")] = Field(
        0, ge=0, le=1000, description="which face when several: 0 = the largest in the first frame with faces")
    min_face_size: float = Field(48, ge=4, description="ignore faces smaller than this many pixels")
    recipe: Literal["ffhq", "eyes"] = Field("ffhq", description="alignment recipe")
    size: Annotated[int | None, Cli()] = Field(None, ge=16, le=4096, description="side of the crops (null: the "
                                               "generator's resolution)")
    supersample: int = Field(2, ge=1, le=8, description="crop resampling runs at this multiple of size")
    landmark_smoothing: Smoothing = Field(default_factory=Smoothing, description="temporal smoothing of the "
                                          "face quads")
    encoder_steps: Annotated[int | None, Cli(hidden=("--steps",)), Renamed("invert_steps")] = Field(
        None, ge=1, le=100, description="ReStyle iterations per frame (null: the reference inference's, 3)")
    batch_size: Annotated[int, Cli()] = Field(4, ge=1, le=1024, description="frames per encoder / generator batch")
    latent_smoothing: Smoothing = Field(default_factory=lambda: Smoothing(window=5), description="temporal "
                                        "smoothing of the latents")
    freeze_fine: Annotated[bool, Cli()] = Field(True, description="replace the fine style inputs by their mean "
                                                "over the clip (stylegan3-editing always does)")
    fine_layers: IndexList = Field(None, description="the fine style inputs (null: 9 and up of 16, the same "
                                   "share of other generators)")
    tune_frames: Annotated[int, Cli(hidden=("--tune",))] = Field(0, ge=0, le=100_000, description="joint PTI "
                                                                 "over N evenly spaced frames (0: none)")
    tune: PtiOptions = Field(default_factory=lambda: PtiOptions(steps=200, batch_size=2, save_every=25),
                             description="joint PTI over the sampled frames")
    crf: int = Field(18, ge=0, le=51, description="H.264 quality (lower is better; 18 is visually lossless)")
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                    "veryslow"] = Field("medium", description="H.264 encoder preset")
    force: Annotated[bool, Cli()] = Field(False, description="recompute every cached stage")

    @model_validator(mode="after")
    def _times(self):
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


CLIP_CLI = {"landmark_smoothing.window": Cli("--smooth-window"), "landmark_smoothing.method": Cli("--smooth-method"),
            "latent_smoothing.window": Cli("--latent-window"), "tune.steps": Cli("--tune-steps")}


class VideoSettings(ClipOptions, EditOptions, Runtime):
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="ReStyle encoder checkpoint "
                                                            "(.pt or registry name)")
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator to invert into and "
                                                              "render with (null: the encoder's decoder)")
    outdir: Outdir = outdir_field("out/video")
    edit_ramp: Annotated[float, Cli()] = Field(0.0, ge=0, description="seconds over which the edit fades in")
    stitch_steps: Annotated[int, Cli("--stitch-tune")] = Field(0, ge=0, le=100_000, description="per-frame "
                                                               "generator tuning steps (\"Stitch it in Time\")")
    stitch_lr: float = Field(3e-4, gt=0, le=1, description="learning rate of that tuning")
    mask: Mask = Field(default_factory=Mask, description="paste-back mask (fractions of the face size)")
    outputs: Annotated[list[Literal[VIDEO_OUTPUTS]], BeforeValidator(split_commas), Cli(metavar="LIST")] = Field(
        default_factory=lambda: list(VIDEO_OUTPUTS), min_length=1, description="videos to write, comma list of "
        + ", ".join(VIDEO_OUTPUTS))

    cli_nested: ClassVar = {**CLIP_CLI, "mask.selfie": Cli("--selfie-mask")}


class ExpandFovSettings(EditOptions, Runtime):
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="StyleGAN3 generator (null with "
                                                              "--encoder: its decoder)")
    left: Annotated[int, Cli()] = Field(0, ge=0, le=100_000, description="pixels to add on the left (at the "
                                        "generator's resolution)")
    right: Annotated[int, Cli()] = Field(0, ge=0, le=100_000, description="pixels to add on the right")
    top: Annotated[int, Cli()] = Field(0, ge=0, le=100_000, description="pixels to add at the top")
    bottom: Annotated[int, Cli()] = Field(0, ge=0, le=100_000, description="pixels to add at the bottom")
    all: Annotated[int | None, Cli("--all")] = Field(None, ge=0, le=100_000, description="pixels to add on every "
                                                     "side (overrides the four above)")
    overlap: float = Field(0.5, ge=0, le=0.9, description="fraction of a window shared with its neighbour")
    feather: int | None = Field(None, ge=0, le=100_000, description="blend width in pixels (null: a quarter of "
                                "the resolution)")
    latent: Annotated[Path | None, Cli()] = Field(None, description="latent of a photo input (skips inversion)")
    transforms: Annotated[Path | None, Cli()] = Field(None, description="landmarks transforms of the latent "
                                                      "files (alignment.json or .npy): expand the unaligned crop "
                                                      "(null: those in the invert.json beside them, if any)")
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="encoder for photo and video "
                                                            "inputs (they are inverted first)")
    outdir: Outdir = outdir_field("out/expand-fov")
    invert: InversionOptions = Field(default_factory=InversionOptions, description="how photos are inverted")
    video: ClipOptions = Field(default_factory=ClipOptions, description="how clips are read and inverted (left "
                               "at the defaults: as the `sgtool video` run recorded in OUTDIR, if any)")

    cli_nested: ClassVar = {"invert.method": Cli("--method", short="-m"), "video.start": Cli("--start"),
                            "video.end": Cli("--end"), "video.fps": Cli("--fps"),
                            "video.max_frames": Cli("--max-frames")}

    def margins(self) -> tuple[int, int, int, int]:
        if self.all is not None:
            return (self.all,) * 4
        return self.left, self.right, self.top, self.bottom

