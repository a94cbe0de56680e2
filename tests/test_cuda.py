"""On a CUDA GPU (benchmarks/gpu_check.sh runs these there): half precision end to end, clustering in
float32 inside it, and several videos per forward pass. Without CUDA they are skipped (and are not
counted as run); test_backbone.py checks float16 on the CPU."""

import copy

import numpy as np
import pytest
import torch
from helpers import SMALL_MODEL_CLUSTERING

from tca_core import clustering
from tca_core.config import METHODS, AccelerationConfig
from tca_core.model import accelerate
from tca_core.segmenter import Clip, VideoSegmenter
from tca_core.synthetic import moving_disc_clip

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SHAPE = dict(alpha=1, grid=4, **SMALL_MODEL_CLUSTERING)  # test_backbone's setting for the small model


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_in_float16_on_the_gpu_near_float32(small_model, reference_model, method):
    pixels = torch.randn(2, 3, 112, 144, generator=torch.Generator().manual_seed(3)).cuda()
    config = AccelerationConfig(method=method, **SHAPE)
    with torch.no_grad():
        accelerate(reference_model.cuda(), config)
        expected = reference_model(pixel_values=pixels).masks_queries_logits
        accelerate(small_model.to("cuda", torch.float16), config)
        actual = small_model(pixel_values=pixels.half()).masks_queries_logits
    assert actual.dtype == torch.float16 and torch.isfinite(actual).all()
    assert (actual.float() - expected).abs().mean() / expected.abs().mean() < 0.03


def test_clustering_computes_in_float32_inside_a_float16_model(small_model, monkeypatch):
    seen = []
    original = clustering.local_kmeans

    def recording(x, *args, **kwargs):
        seen.append(x.dtype)
        return original(x, *args, **kwargs)

    monkeypatch.setattr(clustering, "local_kmeans", recording)
    accelerate(small_model.to("cuda", torch.float16), AccelerationConfig(method="tca", **SHAPE))
    with torch.no_grad():
        small_model(pixel_values=torch.randn(1, 3, 112, 144, device="cuda", dtype=torch.float16))
    assert seen and set(seen) == {torch.float32}


def test_several_videos_in_one_pass_give_each_ones_masks_on_the_gpu(disc_model):
    model = copy.deepcopy(disc_model).to("cuda", torch.float16)  # the session's fixture stays on the CPU
    segmenter = VideoSegmenter(model, AccelerationConfig(method="tca", **SHAPE))
    clips = {name: moving_disc_clip(8, 96, 128, seed=seed)[0] for name, seed in (("a", 0), ("b", 1))}
    together = segmenter.process([Clip(f"together/{name}", 0, frames) for name, frames in clips.items()])
    for (name, frames), mine in zip(clips.items(), together):
        alone = segmenter.process([Clip(f"alone/{name}", 0, frames)])[0]
        for a, b in zip(alone, mine):
            assert len(a.instances) == len(b.instances)
            for x, y in zip(a.instances, b.instances):
                assert np.logical_xor(x.mask, y.mask).mean() < 0.01
