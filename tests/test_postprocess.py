"""Post-processing (tca_core.postprocess) against what `transformers` computes: every mask resized to
POSTPROCESS_SIZE, torch's bilinear resize of the class scores and its argmax, torch's nearest resize
of the masks; the bounds that spare most of that work."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tca_core.postprocess import (
    POSTPROCESS_SIZE,
    _Grid,
    _scores_at,
    _sure_cells,
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
    return class_logits, masks


def _reference_scores(class_logits, masks, size):
    """`transformers`' computation: every mask at POSTPROCESS_SIZE, the class scores there, resized."""
    probabilities = postprocess_logits(masks).sigmoid()
    scores = class_logits.softmax(-1)[:, :-1].T @ probabilities.flatten(1)
    scores = scores.view(-1, *POSTPROCESS_SIZE)
    return F.interpolate(scores[None], size=size, mode="bilinear", align_corners=False)[0]


@pytest.mark.parametrize("size", SIZES)
def test_the_label_map_is_the_argmax_of_the_resized_scores_except_at_float_ties(size):
    mismatched, pixels = 0, 0
    for seed in range(3):
        class_logits, masks = _outputs(seed)
        reference = _reference_scores(class_logits, masks, size)
        expected = reference.max(0).indices.numpy()
        got = semantic_label_map(class_logits, masks, size)
        assert got.shape == size and got.dtype == np.int32
        differ = got != expected
        top = reference.topk(2, dim=0).values
        margin = (top[0] - top[1]).numpy()
        assert np.all(margin[differ] < 1e-5), "a pixel with a clear winner got another class"
        mismatched, pixels = mismatched + differ.sum(), pixels + differ.size
    assert mismatched <= pixels * 1e-5


def test_a_frame_of_one_class_everywhere_is_that_class_at_any_size():
    class_logits, masks = _outputs(0)
    class_logits[:, :-1] = -20.0
    class_logits[:, 4] = 20.0
    assert np.all(semantic_label_map(class_logits, masks, (1080, 1920)) == 4)


@pytest.mark.parametrize("size", SIZES + [(768, 1152), (100, 50)])
def test_resized_masks_are_the_pixels_of_torchs_nearest_mode(size):
    generator = torch.Generator().manual_seed(1)
    binary = (torch.rand(5, *POSTPROCESS_SIZE, generator=generator) > 0.5).float()
    expected = F.interpolate(binary[None], size=size, mode="nearest")[0].bool().numpy()
    got = resized_masks(binary, size)
    assert got.dtype == bool and np.array_equal(got, expected)
    assert nearest_indices(384, size[0]).max() <= 383


def test_only_queries_that_could_reach_the_threshold_are_scored_and_their_scores_are_unchanged():
    class_logits, masks = _outputs(2)
    everything = instance_scores(class_logits, masks)
    some = instance_scores(class_logits, masks, least=0.5)
    class_scores = class_logits.softmax(-1)[:, :-1].max(-1).values
    picked = class_scores >= 0.5
    assert 0 < picked.sum() < len(picked), "the outputs should have queries on both sides"
    assert torch.equal(some.rows >= 0, picked) and len(some.binary) == picked.sum()
    assert torch.all(some.scores[~picked] == 0) and torch.all(everything.scores[~picked] < 0.5)
    torch.testing.assert_close(some.scores[picked], everything.scores[picked], rtol=0, atol=1e-6)
    assert torch.equal(some.binary, everything.binary[picked])
    assert torch.equal(some.area[picked], everything.area[picked])


def test_a_sure_cell_is_the_best_class_at_every_pixel_resized_from_it_and_most_cells_are_sure():
    class_logits, masks = _outputs(3)
    class_probs = class_logits.softmax(-1)[:, :-1]
    cells = _sure_cells(class_probs, masks)
    reference = _reference_scores(class_logits, masks, POSTPROCESS_SIZE)
    grid = _Grid.of(masks.shape[1:], POSTPROCESS_SIZE, masks.device)
    labels = cells.index_select(0, grid.rows.low)[:, grid.cols.low].long()
    sure = labels >= 0
    top = reference.topk(2, dim=0)
    assert torch.equal(labels[sure], top.indices[0][sure]), "a sure cell's class lost at a pixel inside it"
    assert torch.all((top.values[0] - top.values[1])[sure] > 0)
    assert 0.5 < sure.float().mean() < 1.0, "the outputs should have sure and unsure cells"


def test_class_scores_computed_at_some_pixels_are_those_of_the_whole_resize():
    class_logits, masks = _outputs(4)
    class_probs = class_logits.softmax(-1)[:, :-1]
    pixels = torch.randperm(POSTPROCESS_SIZE[0] * POSTPROCESS_SIZE[1], generator=torch.Generator().manual_seed(0))[
        :5000
    ]
    grid = _Grid.of(masks.shape[1:], POSTPROCESS_SIZE, masks.device)
    got = _scores_at(class_probs, masks, grid, pixels)
    expected = (class_probs.T @ postprocess_logits(masks).sigmoid().flatten(1))[:, pixels]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_a_frame_where_no_query_reaches_the_threshold_scores_nothing():
    class_logits, masks = _outputs(5)
    class_logits[:, -1] = 20.0  # every query says "no object"
    scored = instance_scores(class_logits, masks, least=0.5)
    assert len(scored.binary) == 0 and torch.all(scored.rows == -1) and torch.all(scored.scores == 0)
