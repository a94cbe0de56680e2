"""Online video instance segmentation: ids stay with the object across frames, clips and methods."""

import copy

import numpy as np
import pytest

from tca_core import rle
from tca_core.config import METHODS, AccelerationConfig
from tca_core.segmenter import Clip, VideoSegmenter
from tca_core.synthetic import moving_disc_clip


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.parametrize("method", METHODS)
def test_moving_object_keeps_one_id(disc_model, method):
    segmenter = VideoSegmenter(copy.deepcopy(disc_model), AccelerationConfig(method=method, alpha=1, grid=4))
    frames, masks = moving_disc_clip(12, 64, 96, seed=123_456)
    # Two clips: the id must also survive the clip boundary.
    results = segmenter.process([Clip("disc", 0, frames[:6])])[0] + segmenter.process([Clip("disc", 6, frames[6:])])[0]
    assert len(results) == 12
    ids = set()
    for result, truth in zip(results, masks):
        assert len(result.instances) == 1, [(i.id, i.score) for i in result.instances]
        instance = result.instances[0]
        assert instance.category == "disc"
        assert _iou(instance.mask, truth) > 0.8
        ids.add(instance.id)
    assert ids == {1}


def test_videos_have_independent_ids(disc_model):
    segmenter = VideoSegmenter(copy.deepcopy(disc_model), AccelerationConfig(method="tca", alpha=1, grid=4))
    (a, _), (b, _) = moving_disc_clip(4, 64, 96, seed=7), moving_disc_clip(4, 64, 96, seed=8)
    for frames in segmenter.process([Clip("a", 0, a), Clip("b", 0, b)]):
        assert [[i.id for i in r.instances] for r in frames] == [[1]] * 4


def test_rle_round_trip_of_produced_masks(disc_model):
    segmenter = VideoSegmenter(copy.deepcopy(disc_model), AccelerationConfig(method="tca", alpha=1, grid=4))
    frames, _ = moving_disc_clip(3, 61, 93, seed=99)  # odd sizes
    masks = [i.mask for r in segmenter.process([Clip("v", 0, frames)])[0] for i in r.instances]
    assert masks
    for mask in masks:
        encoded = rle.encode(mask)
        assert encoded["size"] == [61, 93] and isinstance(encoded["counts"], str)
        assert np.array_equal(rle.decode(encoded), mask)
        assert rle.area(encoded) == mask.sum()
        ys, xs = np.nonzero(mask)
        assert rle.bbox(encoded) == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
