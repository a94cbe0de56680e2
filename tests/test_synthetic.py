"""The video generator: exact ground truth over real plates, textures, small and thin objects, both
cameras, the held-out split, determinism, and the motions the data must contain."""

import json

import numpy as np
import pytest

from pipelines.generate import write_generated
from pipelines.video_io import open_video
from tca_core import plates, rle
from tca_core.synthetic import (
    CAMERAS,
    CATEGORIES,
    FAMILY_JITTER,
    HELD_OUT_SEED,
    HELD_OUT_SETS,
    LOOKS,
    THING_CATEGORIES,
    SyntheticVideo,
    _view,
    category_hue,
    held_out_videos,
    semantic_map,
)


def _rendered(video, t, keep):
    """Frame t rendered with only the tracks for which `keep(track)` holds: (image, objects)."""
    tracks = video.tracks
    video.tracks = [track for track in tracks if keep(track)]
    try:
        return video.frame(t)
    finally:
        video.tracks = tracks


def _without(video, track_id, t):
    return _rendered(video, t, lambda track: track.track_id != track_id)[0]


@pytest.mark.parametrize("camera", CAMERAS)
def test_masks_are_exactly_where_each_object_was_drawn(camera):
    for seed in range(4):
        video = SyntheticVideo(seed, num_frames=12, camera=camera)
        for t in (0, 11):
            image, objects = video.frame(t)
            for obj in objects:
                # Render the frame again without this object: the pixels that change are its visible mask.
                changed = np.any(image != _without(video, obj.track_id, t), axis=-1)
                assert not (changed & ~obj.mask).any(), "pixels outside the mask changed"
                assert changed[obj.mask].mean() > 0.97, "mask pixels where nothing was drawn"


def test_occlusion_leaves_only_visible_pixels():
    """Visible masks never overlap, and piled objects hide parts of each other."""
    hidden = 0
    for seed in range(12):
        video = SyntheticVideo(seed, num_frames=24)
        for t in range(0, 24, 6):
            _, objects = video.frame(t)
            total = np.sum([o.mask.astype(int) for o in objects], axis=0) if objects else 0
            assert np.max(total, initial=0) <= 1
            for obj in objects:
                alone = _alone(video, obj.track_id, t)
                hidden += alone.sum() > 1.3 * obj.mask.sum()
    assert hidden >= 10, f"only {hidden} objects were more than a quarter hidden in 12 videos"


def _alone(video, track_id, t):
    """The mask the object would have with nothing in front of it."""
    objects = _rendered(video, t, lambda track: track.track_id == track_id)[1]
    return objects[0].mask if objects else np.zeros((video.height, video.width), bool)


def test_each_category_shows_its_texture_inside_its_mask():
    """Inside a large visible object, textured categories show two tones in a share no single tone
    explains; the plain one does not."""
    split = {category: [] for category in THING_CATEGORIES}
    for seed in range(40):
        video = SyntheticVideo(seed, num_frames=1)
        image, objects = video.frame(0)
        for obj in objects:
            if obj.mask.sum() >= 600 and LOOKS[obj.category_id][0] not in ("rod", "ring"):
                split[obj.category_id].append(_dark_share(image, obj.mask))
    for category, shares in split.items():
        if LOOKS[category][0] in ("rod", "ring"):
            continue
        assert shares, f"no large {CATEGORIES[category]} in 40 videos"
        if LOOKS[category][1] == "plain":
            assert np.median(shares) < 0.05, (CATEGORIES[category], shares)
        else:
            assert 0.15 < np.median(shares) < 0.85, (CATEGORIES[category], shares)


def _dark_share(image, mask):
    """Share of the mask's pixels much darker than its brightest tone (the texture colour)."""
    brightness = image[mask].astype(float).max(-1)
    return float(np.mean(brightness < 0.6 * np.percentile(brightness, 95)))


def test_small_and_thin_objects_are_their_size():
    small, thin = [], []
    for seed in range(30):
        video = SyntheticVideo(seed, num_frames=1)
        for obj in _alone_objects(video):
            rows, cols = np.nonzero(obj.mask)
            extent = max(np.ptp(rows), np.ptp(cols)) + 1
            if extent <= 16:
                small.append(extent)
            if LOOKS[obj.category_id][0] == "rod" and extent > 30:
                thin.append(obj.mask.sum() / np.hypot(np.ptp(rows), np.ptp(cols)))  # about the rod's width
    assert len(small) >= 5 and min(small) <= 10, small
    assert len(thin) >= 3 and max(thin) <= 15, thin  # 6-10 plate pixels, zoomed up to 1.42x


def _alone_objects(video):
    return [obj for track in video.tracks for obj in [_alone_object(video, track.track_id)] if obj]


def _alone_object(video, track_id):
    """The object alone in frame 0, or None when it is absent or touches the frame's border."""
    objects = _rendered(video, 0, lambda track: track.track_id == track_id)[1]
    return objects[0] if objects and objects[0].mask[1:-1, 1:-1].sum() == objects[0].mask.sum() else None


@pytest.mark.parametrize("camera", CAMERAS)
def test_the_background_is_the_plate_seen_by_the_camera(camera):
    video = SyntheticVideo(7, num_frames=16, camera=camera)
    for t in (0, 15):
        image, objects = video.frame(t)
        free = ~np.any([o.mask for o in objects], axis=0) if objects else np.ones(image.shape[:2], bool)
        plate_frame = video.plate.frames[video.plate_frames[t]]
        expected = (
            _view(plate_frame, video.camera.centers[t], video.camera.zooms[t], image.shape[:2]) * video.lighting[t]
        )
        error = np.abs(image[free].astype(float) - np.clip(expected[free], 0, 255))
        assert error.mean() < 2 * video.noise, (camera, t, error.mean())
    zooms, centers = video.camera.zooms, video.camera.centers
    if camera == "static":
        assert np.all(zooms == 1) and np.all(centers == centers[0])
    else:
        assert np.all((zooms >= 1.02) & (zooms <= 1.42))
        assert np.linalg.norm(centers[-1] - centers[0]) > 0 and np.ptp(zooms) > 0


def test_objects_move_with_the_scene_under_a_moving_camera():
    """An object's frame position is its plate position seen through that frame's camera."""
    video = SyntheticVideo(3, num_frames=24, camera="moving")
    track = video.tracks[0]
    for t in (0, 12, 23):
        expected = video.to_frame(t, track.positions[t][None])[0]
        alone = _alone(video, track.track_id, t)
        if alone.sum() > 50 and LOOKS[track.category_id][0] not in ("crescent", "ring"):
            assert np.allclose(np.argwhere(alone).mean(0), expected, atol=3)


def test_held_out_videos_use_unseen_seeds_and_plate_frames():
    assert set(HELD_OUT_SETS) == {"static-camera", "moving-camera"}
    for set_name, camera in HELD_OUT_SETS.items():
        for video in held_out_videos(set_name, 3, num_frames=8):
            assert video.seed >= HELD_OUT_SEED and video.camera_kind == camera
            assert set(video.plate_frames) <= set(video.plate.split(held_out=True))
    for seed in range(10):
        video = SyntheticVideo(seed, num_frames=8)
        assert set(video.plate_frames) <= set(video.plate.split(held_out=False))
    with pytest.raises(ValueError, match="unknown held-out set 'indoor'"):
        held_out_videos("indoor", 1)


def test_colour_hints_the_category_and_never_decides_it():
    in_family = []
    for seed in range(60):
        for track in SyntheticVideo(seed, num_frames=1).tracks:
            hue = _hue_of(track.colors[0])
            distance = abs((hue - category_hue(track.category_id) + 0.5) % 1 - 0.5)
            in_family.append(distance <= FAMILY_JITTER + 0.02)
    assert 0.6 < np.mean(in_family) < 0.9, np.mean(in_family)


def _hue_of(rgb):
    import colorsys

    return colorsys.rgb_to_hsv(*(np.asarray(rgb) / 255))[0]


def test_a_missing_plate_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TCA_PLATE_DIR", str(tmp_path / "nowhere"))
    monkeypatch.setenv("TCA_CACHE_DIR", str(tmp_path / "cache"))
    plates.plate.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="nowhere/milk.mkv is missing"):
            plates.plate("milk.mkv")
    finally:
        plates.plate.cache_clear()
    with pytest.raises(ValueError, match="unknown plate 'beach.mp4'"):
        plates.plate("beach.mp4")


def test_deterministic_by_seed():
    a, b, c = SyntheticVideo(5, 8), SyntheticVideo(5, 8), SyntheticVideo(6, 8)
    assert np.array_equal(a.frame(3)[0], b.frame(3)[0])
    assert not np.array_equal(a.frame(3)[0], c.frame(3)[0])
    with pytest.raises(ValueError, match="camera must be one of"):
        SyntheticVideo(0, 8, camera="drone")


def test_the_data_has_every_category_and_kind_of_motion():
    categories, enter_or_leave, still, fast, spin = set(), 0, 0, 0, 0
    for seed in range(30):
        video = SyntheticVideo(seed, num_frames=48)
        for track in video.tracks:
            categories.add(track.category_id)
            steps = np.linalg.norm(np.diff(track.positions, axis=0), axis=1)
            still += (steps == 0).sum() >= 4
            fast += (steps > 4).any()
            spin += np.ptp(track.angles) > 0.5
        present = [{o.track_id for o in video.frame(t)[1]} for t in range(0, 48, 6)]
        enter_or_leave += any(a != b for a, b in zip(present, present[1:]))
    assert categories == set(THING_CATEGORIES)
    assert min(enter_or_leave, still, fast, spin) > 3, (enter_or_leave, still, fast, spin)


def test_out_of_range_frame_is_an_error():
    with pytest.raises(IndexError, match="frame 8 of a 8-frame video"):
        SyntheticVideo(0, 8).frame(8)


def test_written_dataset_decodes_and_matches_ground_truth(tmp_path):
    path = write_generated(tmp_path, [11, 12], num_frames=10, fps=10)
    data = json.loads(path.read_text())
    assert [c["name"] for c in data["categories"]] == [CATEGORIES[i] for i in THING_CATEGORIES]
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
