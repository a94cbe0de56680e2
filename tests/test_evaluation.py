"""Metrics against hand-computed values."""

import numpy as np
import pytest

from tca_core.evaluation import ConfusionMatrix, Track, tracks_from_frames, video_ap, video_iou


def test_miou_by_hand():
    truth = np.array([[0, 0, 1, 1], [0, 0, 1, 1]])
    prediction = np.array([[0, 0, 0, 1], [0, 0, 1, 1]])
    confusion = ConfusionMatrix(3)
    confusion.update(prediction, truth)
    # class 0: 4 / 5, class 1: 3 / 4, class 2 absent everywhere (ignored)
    assert confusion.iou()[:2].tolist() == [0.8, 0.75]
    assert confusion.miou() == pytest.approx((0.8 + 0.75) / 2)
    with pytest.raises(ValueError, match="shape"):
        confusion.update(prediction[:1], truth)


def _track(video, category, frames, score=1.0, shape=(2, 8, 8)):
    masks = np.zeros(shape, dtype=bool)
    for t, (y0, y1, x0, x1) in frames.items():
        masks[t, y0:y1, x0:x1] = True
    return Track(video, category, masks, score)


def test_video_iou_sums_over_frames():
    a = _track("v", 1, {0: (0, 4, 0, 4), 1: (0, 4, 0, 4)})
    b = _track("v", 1, {0: (0, 4, 0, 4)})  # absent in frame 1
    assert video_iou(a.masks, b.masks) == pytest.approx(16 / 32)


def test_video_ap_by_hand():
    truth = [_track("v", 1, {0: (0, 4, 0, 4), 1: (0, 4, 0, 4)}), _track("v", 2, {0: (4, 8, 4, 8)})]
    assert video_ap(truth, truth)["ap"] == pytest.approx(1.0)

    # IoU 0.75 passes thresholds 0.50 .. 0.75 (6 of 10) for class 1; class 2 is missed entirely.
    partial = _track("v", 1, {0: (0, 4, 0, 3), 1: (0, 4, 0, 3)})
    result = video_ap(truth, [partial])
    assert result["per_category"] == {1: pytest.approx(0.6), 2: 0.0}
    assert result["ap50"] == pytest.approx(0.5)

    # A confident false positive ahead of the true one halves precision at full recall.
    wrong = _track("v", 1, {0: (4, 8, 0, 4)}, score=0.9)
    right = _track("v", 1, {0: (0, 4, 0, 4), 1: (0, 4, 0, 4)}, score=0.5)
    assert video_ap(truth[:1], [wrong, right])["ap"] == pytest.approx(0.5)
    # Tracks of another video never match.
    assert video_ap(truth[:1], [_track("other", 1, {0: (0, 4, 0, 4), 1: (0, 4, 0, 4)})])["ap"] == 0.0


def test_tracks_from_frames_votes_category_and_averages_score():
    mask = np.ones((2, 2), dtype=bool)
    frames = [[(7, 1, 0.8, mask)], [(7, 2, 0.6, mask)], [(7, 1, 0.4, mask)]]
    (track,) = tracks_from_frames("v", frames, (2, 2))
    assert (track.category_id, track.score, track.masks.shape) == (1, pytest.approx(0.6), (3, 2, 2))
