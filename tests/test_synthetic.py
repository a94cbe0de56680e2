"""The video generator: exact ground truth, determinism, and the motions the data must contain."""

import json

import numpy as np
import pytest

from pipelines.generate import write_generated
from pipelines.video_io import open_video
from tca_core import rle
from tca_core.synthetic import CATEGORIES, SyntheticVideo, semantic_map


def test_masks_are_exactly_where_each_object_was_drawn():
    for seed in range(6):
        video = SyntheticVideo(seed, num_frames=12)
        for t in (0, 5, 11):
            image, objects = video.frame(t)
            for obj in objects:
                # Render the frame again without this object: the pixels that change are its visible mask.
                tracks = video.tracks
                video.tracks = [tr for tr in tracks if tr.track_id != obj.track_id]
                without, _ = video.frame(t)
                video.tracks = tracks
                changed = np.any(image != without, axis=-1)
                assert not (changed & ~obj.mask).any(), "pixels outside the mask changed"
                assert changed[obj.mask].mean() > 0.97, "mask pixels where nothing was drawn"


def test_occlusion_leaves_only_visible_pixels():
    """Visible masks never overlap, and an occluded object's mask excludes what covers it."""
    overlaps = 0
    for seed in range(20):
        video = SyntheticVideo(seed, num_frames=24)
        for t in range(0, 24, 3):
            _, objects = video.frame(t)
            total = np.sum([o.mask.astype(int) for o in objects], axis=0) if objects else 0
            assert np.max(total, initial=0) <= 1
            overlaps += len(objects) > 1 and any(
                _bbox_overlap(a.mask, b.mask) for i, a in enumerate(objects) for b in objects[i + 1 :]
            )
    assert overlaps > 0, "no occlusion happened in 20 videos"


def _bbox_overlap(a, b):
    ya, xa = np.nonzero(a)
    yb, xb = np.nonzero(b)
    return ya.min() <= yb.max() and yb.min() <= ya.max() and xa.min() <= xb.max() and xb.min() <= xa.max()


def test_deterministic_by_seed():
    a, b, c = SyntheticVideo(5, 8), SyntheticVideo(5, 8), SyntheticVideo(6, 8)
    assert np.array_equal(a.frame(3)[0], b.frame(3)[0])
    assert not np.array_equal(a.frame(3)[0], c.frame(3)[0])


def test_the_data_has_every_kind_of_motion():
    categories, enter_or_leave, still, fast, spin = set(), 0, 0, 0, 0
    for seed in range(30):
        video = SyntheticVideo(seed, num_frames=48)
        for track in video.tracks:
            categories.add(track.category_id)
            steps = np.linalg.norm(np.diff(track.positions, axis=0), axis=1)
            still += (steps == 0).sum() >= 4
            fast += (steps > 5).any()
            spin += np.ptp(track.angles) > 0.5
        present = [{o.track_id for o in video.frame(t)[1]} for t in range(0, 48, 4)]
        enter_or_leave += any(a != b for a, b in zip(present, present[1:]))
    assert categories == {1, 2, 3, 4}
    assert min(enter_or_leave, still, fast, spin) > 3, (enter_or_leave, still, fast, spin)


def test_out_of_range_frame_is_an_error():
    with pytest.raises(IndexError, match="frame 8 of a 8-frame video"):
        SyntheticVideo(0, 8).frame(8)


def test_written_dataset_decodes_and_matches_ground_truth(tmp_path):
    path = write_generated(tmp_path, [11, 12], num_frames=10, fps=10)
    data = json.loads(path.read_text())
    assert [c["name"] for c in data["categories"]] == [CATEGORIES[i] for i in (1, 2, 3, 4)]
    for entry in data["videos"]:
        video = SyntheticVideo(entry["seed"], 10)
        frames, objects = video.frames()
        reader = open_video(tmp_path / entry["file_name"])
        info = reader.info
        assert (info.frames, info.height, info.width) == (10, 224, 336)
        decoded = reader.read(0, 10)[0].astype(float)
        psnr = 10 * np.log10(255**2 / np.mean((decoded - frames) ** 2))
        assert psnr > 25, f"H.264 round trip at {psnr:.1f} dB"  # chroma subsampling, noise
        tracks = [a for a in data["annotations"] if a["video_id"] == entry["id"]]
        for t in range(10):
            truth = semantic_map(objects[t], 224, 336)
            rebuilt = np.zeros_like(truth)
            for track in tracks:
                if track["segmentations"][t] is not None:
                    rebuilt[rle.decode(track["segmentations"][t])] = track["category_id"]
            assert np.array_equal(rebuilt, truth)
