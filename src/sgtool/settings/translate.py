"""Settings of `sgtool translate`: pSp's image-to-image tasks and their multi-modal outputs."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from .base import Cli
from .commands import SEED_LIMIT, Outdir, outdir_field
from .common import EncoderRef, GeneratorRef, IndexList, Runtime


class TranslateSettings(Runtime):
    encoder: Annotated[EncoderRef, Cli(short="-e")] = Field(None, description="pSp task checkpoint (required): "
                                                            "sketch, segmentation, super-resolution, frontalisation "
                                                            "or toonify (.pt or registry name)")
    network: Annotated[GeneratorRef, Cli(short="-n")] = Field(None, description="generator (null: the "
                                                              "checkpoint's decoder)")
    outdir: Outdir = outdir_field("out/translate")
    outputs: Annotated[int, Cli()] = Field(0, ge=0, le=64, description="multi-modal outputs per input by pSp's "
                                           "style mixing (0: the translation only)")
    seed: Annotated[int, Cli()] = Field(0, ge=0, lt=SEED_LIMIT, description="seed of the injected z (numpy, as "
                                        "pSp's style_mixing.py) and of the mixes' noise maps")
    mix_layers: Annotated[IndexList, Cli(metavar="LIST")] = Field(
        None, description="W+ rows the injected codes replace (pSp's --latent_mask; null: the fine rows, 8-17 of "
        "18, 4-9 of 10)")
    mix_alpha: Annotated[float | None, Cli()] = Field(None, ge=0, le=1, description="blend alpha * injected + "
                                                      "(1 - alpha) * code in those rows (null: replace)")
    factor: Annotated[int | None, Cli()] = Field(None, ge=1, le=64, description="super-resolution: downsampling "
                                                 "factor applied before restoring (pSp's --resize_factors; needed "
                                                 "when the checkpoint was trained on several)")
    palette: Annotated[str | None, Cli()] = Field(None, description="segmentation: read colour-coded maps with this "
                                                  "palette, celebamask or a file of RGB colours (null: class-id PNGs)")
    resize_outputs: Annotated[bool, Cli()] = Field(False, description="write outputs at 256 px (pSp's "
                                                   "--resize_outputs) instead of the decoder's resolution")
    batch_size: int = Field(4, ge=1, le=1024, description="inputs per encoder pass")

    @model_validator(mode="after")
    def _consistent(self):
        if self.outputs == 0 and (self.mix_layers is not None or self.mix_alpha is not None):
            raise ValueError("mix_layers and mix_alpha shape the style-mixing outputs: give --outputs N too")
        return self
