"""Post-processing at a video's own size (tca_core.postprocess) against what `transformers` computes:
torch's bilinear resize of the class scores and its argmax, torch's nearest resize of the masks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tca_core.postprocess import (
    POSTPROCESS_SIZE,
    instance_scores,
    nearest_indices,
    postprocess_logits,
    resized_masks,
    semantic_label_map,
)

SIZES = [(224, 336), (360, 640), (432, 768), (1080, 1920), (401, 997), (768, 768)]


def _outputs(seed: int, queries: int = 24, classes: int = 9):
    """Class logits and mask logits shaped like a Mask2Former's, with smooth masks and sharp classes."""
    generator = torch.Generator().manual_seed(seed)
    class_logits = torch.randn(queries, classes + 1, generator=generator) * 4
    coarse = torch.randn(1, queries, 7, 11, generator=generator) * 8
    masks = F.interpolate(coarse, size=(56, 84), mode="bilinear", align_corners=False)[0]
    return class_logits, postprocess_logits(masks)


def _reference_scores(class_logits, logits, size):
    probabilities = logits.sigmoid()
    scores = class_logits.softmax(-1)[:, :-1].T @ probabilities.flatten(1)
    scores = scores.view(-1, *POSTPROCESS_SIZE)
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("size", SIZES)
def test_the_label_map_is_the_argmax_of_the_resized_scores_except_at_float_ties(size):
    mismatched, pixels = 0, 0
    for seed in range(3):
        class_logits, logits = _outputs(seed)
        reference = _reference_scores(class_logits, logits, size)
        expected = reference.max(0).indices.numpy()
        got = semantic_label_map(class_logits, logits, size)
        assert got.shape == size and got.dtype == np.int32
        differ = got != expected
        top = reference.topk(2, dim=0).values
        margin = (top[0] - top[1]).numpy()
        assert np.all(margin[differ] < 1e-5), "a pixel with a clear winner got another class"
        mismatched, pixels = mismatched + differ.sum(), pixels + differ.size
    assert mismatched <= pixels * 1e-5


def test_a_frame_of_one_class_everywhere_is_that_class_at_any_size():
    class_logits, logits = _outputs(0)
    class_logits[:, :-1] = -20.0
    class_logits[:, 4] = 20.0
    assert np.all(semantic_label_map(class_logits, logits, (1080, 1920)) == 4)


@pytest.mark.parametrize("size", SIZES + [(768, 1152), (100, 50)])
def test_resized_masks_are_the_pixels_of_torchs_nearest_mode(size):
    generator = torch.Generator().manual_seed(1)
    binary = (torch.rand(5, *POSTPROCESS_SIZE, generator=generator) > 0.5).float()
    expected = F.interpolate(binary[None], size=size, mode="nearest")[0].bool().numpy()
    got = resized_masks(binary, size)
    assert got.dtype == bool and np.array_equal(got, expected)
    assert nearest_indices(384, size[0]).max() <= 383


def test_only_queries_that_could_reach_the_threshold_are_scored_and_their_scores_are_unchanged():
    class_logits, logits = _outputs(2)
    everything = instance_scores(class_logits, logits)
    some = instance_scores(class_logits, logits, least=0.5)
    class_scores = class_logits.softmax(-1)[:, :-1].max(-1).values
    picked = class_scores >= 0.5
    assert 0 < picked.sum() < len(picked), "the outputs should have queries on both sides"
    assert torch.equal(some.rows >= 0, picked) and len(some.binary) == picked.sum()
    assert torch.all(some.scores[~picked] == 0) and torch.all(everything.scores[~picked] < 0.5)
    torch.testing.assert_close(some.scores[picked], everything.scores[picked], rtol=0, atol=1e-6)
    assert torch.equal(some.binary, everything.binary[picked])
    assert torch.equal(some.area[picked], everything.area[picked])
