"""What an untrained StyleFeatureEditor computes, so `train-encoder --arch sfe` starts from features that work: the
fuser hands on the generator's own activation, the editor moves F as the e4e feature moves."""

from __future__ import annotations

import torch

from sgtool.models.encoders.sfe import FeatureStyleEditor, SfeConfig


def test_untrained_fuser_passes_the_generators_feature_and_editor_applies_the_e4e_change():
    torch.manual_seed(0)
    model = FeatureStyleEditor(SfeConfig(num_styles=4, w_dim=8, width=0.0625, feature_channels=6, layer="b16",
                                         feature_size=16, input_size=64)).eval()
    content, own, delta = (torch.randn(2, 6, 16, 16) for _ in range(3))
    with torch.no_grad():
        fused = model.fuser(torch.zeros_like(content), own)
        torch.testing.assert_close(fused, own)
        assert not torch.allclose(model.fuser(content, own), own)  # the content head is heard from the start
        torch.testing.assert_close(model.edit_feature(own, delta), own - delta)
        torch.testing.assert_close(model.edit_feature(own), own)  # no edit: the reconstruction's F
