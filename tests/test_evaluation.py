"""Metrics against hand-computed values."""

import numpy as np
import pytest

from tca_core.evaluation import (
    ConfusionMatrix,
    Scoreboard,
    Track,
    paired_difference,
    tracks_from_frames,
    video_ap,
    video_iou,
)


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


def _board(per_video_boxes):
    """A Scoreboard of one-object videos: the truth is a 4x4 square, the prediction `box`."""
    from tca_core.synthetic import ObjectTruth

    board = Scoreboard({0: "background", 1: "thing"})
    square = np.zeros((8, 8), dtype=bool)
    square[0:4, 0:4] = True
    for index, (y0, y1, x0, x1) in enumerate(per_video_boxes):
        predicted = np.zeros((8, 8), dtype=bool)
        predicted[y0:y1, x0:x1] = True
        truth = [ObjectTruth(track_id=1, category_id=1, mask=square)]
        board.add_video(f"v{index}", [predicted.astype(np.int32)], [[(1, 1, 1.0, predicted)]], [truth], (8, 8))
    return board


def test_scoreboard_metrics_over_a_selection_of_videos():
    board = _board([(0, 4, 0, 4), (0, 4, 0, 2), (0, 4, 0, 3)])
    only_last = _board([(0, 4, 0, 3)])
    assert board.metrics([2]) == only_last.metrics()
    assert board.metrics([0, 0])["ap"] == 1.0
    assert board.metrics()["ap"] < 1.0
    # A video drawn twice counts twice: pixels and tracks.
    twice = board.metrics([1, 1])
    assert twice["miou"] == pytest.approx(board.metrics([1])["miou"])
    assert twice["ap"] == pytest.approx(board.metrics([1])["ap"])


def test_paired_difference_intervals():
    better = _board([(0, 4, 0, 4), (0, 4, 0, 4), (0, 4, 0, 3), (0, 4, 0, 4)])
    worse = _board([(0, 4, 0, 3), (0, 4, 0, 2), (0, 4, 0, 3), (0, 4, 0, 3)])
    same = paired_difference(worse, worse, resamples=200)
    assert all(v == dict(difference=0.0, low=0.0, high=0.0) for v in same.values())
    gain = paired_difference(better, worse, resamples=200)
    assert gain["miou"]["difference"] > 0 and gain["miou"]["low"] >= 0
    assert gain["miou"]["low"] <= gain["miou"]["difference"] <= gain["miou"]["high"]
    loss = paired_difference(worse, better, resamples=200)
    assert loss["miou"]["high"] <= 0 < -loss["miou"]["difference"]
    with pytest.raises(ValueError, match="same videos"):
        paired_difference(better, _board([(0, 4, 0, 4)]))
