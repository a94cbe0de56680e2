"""TCA's cluster memory: static clips, resets, export/import, several videos in one batch."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import SMALL_MODEL_CLUSTERING, random_frames, smooth_video

from tca_core import clustering
from tca_core.config import AccelerationConfig
from tca_core.memory import ClusterMemory, MemoryBank, VideoMemory
from tca_core.model import accelerate, build_model
from tca_core.segmenter import Clip, VideoSegmenter
from tca_core.swin import FrameStream

TCA = AccelerationConfig(method="tca", alpha=1, grid=4, tau=0.9, **SMALL_MODEL_CLUSTERING)


def _assert_same_results(first, second):
    """Frame results are bit-identical: label maps, or instance ids, classes, scores and masks."""
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert (a.video_id, a.frame_index) == (b.video_id, b.frame_index)
        if a.label_map is not None:
            assert np.array_equal(a.label_map, b.label_map)
        assert [(i.id, i.category_id, i.score) for i in a.instances] == [
            (i.id, i.category_id, i.score) for i in b.instances
        ]
        assert all(np.array_equal(i.mask, j.mask) for i, j in zip(a.instances, b.instances))


def test_static_clip_continues_one_kmeans_run(small_model):
    """On a static clip every token is stable, so frame t's clusters are those of per-frame clustering
    run for iters + t * tca_iters rounds: TCA continues the k-means of the previous frame."""
    backbone = accelerate(small_model, TCA)
    frames = torch.randn(1, 3, 96, 128).repeat(4, 1, 1, 1)
    memory = ClusterMemory()
    with torch.no_grad(), backbone.streaming([FrameStream(memory, list(range(4)))]):
        maps = backbone(frames).feature_maps
    stats = backbone.last_stats
    assert stats[0].reset == "start" and stats[0].reassigned == 1.0
    assert all(s.reset is None and s.reassigned == 0.0 for s in stats[1:])
    assert memory.frame_index == 3
    for t in range(4):
        rounds = TCA.iters + t * TCA.tca_iters
        backbone.acceleration = replace(TCA, method="clustering", iters=rounds, reconstruction="residual")
        with torch.no_grad():
            expected = backbone(frames[:1]).feature_maps
        for got, want in zip(maps, expected):
            torch.testing.assert_close(got[t : t + 1], want, rtol=1e-4, atol=1e-4)


def test_static_clip_through_the_segmenter_reassigns_nothing(small_model):
    segmenter = VideoSegmenter(small_model, TCA, task="semantic")
    frames = np.repeat(random_frames(1, 80, 112), 4, axis=0)
    results = segmenter.process([Clip("static", 0, frames)])[0]
    assert [r.stats.reassigned for r in results] == [1.0, 0.0, 0.0, 0.0]


def test_a_patch_moving_over_a_still_scene_reassigns_the_windows_around_it_only(small_model):
    segmenter = VideoSegmenter(small_model, TCA, task="semantic")
    frames = np.repeat(random_frames(1, 224, 448), 4, axis=0)  # 8 windows at the clustered stage
    for t in range(1, 4):
        frames[t, 16:48, 16 + 8 * t : 48 + 8 * t] = 255
    results = segmenter.process([Clip("moving", 0, frames)])[0]
    later = [r.stats for r in results[1:]]
    assert all(s.reset is None for s in later)
    assert all(0.0 < s.reassigned < 1.0 for s in later)


def test_hard_cut_resets_the_memory(small_model):
    segmenter = VideoSegmenter(small_model, TCA, task="semantic")
    first, second = smooth_video(3, 96, 128, seed=1), smooth_video(3, 96, 128, seed=2)
    second = 255 - second  # an unrelated scene
    results = segmenter.process([Clip("cut", 0, np.concatenate([first, second]))])[0]
    assert [r.stats.reset for r in results] == ["start", None, None, "scene_cut", None, None]


def test_gap_and_size_change_reset_the_memory(small_model):
    segmenter = VideoSegmenter(small_model, TCA, task="semantic")
    video = smooth_video(6, 96, 128)
    segmenter.process([Clip("v", 0, video[:2])])
    after_gap = segmenter.process([Clip("v", 4, video[4:])])[0]
    assert [r.stats.reset for r in after_gap] == ["gap", None]
    resized = segmenter.process([Clip("v", 6, smooth_video(1, 64, 96))])[0]
    assert resized[0].stats.reset == "size_change"
    segmenter.drop("v")
    assert segmenter.process([Clip("v", 7, video[:1])])[0][0].stats.reset == "start"


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_export_import_continues_bit_identically(small_config, task):
    video = smooth_video(8, 96, 128)
    clips = [Clip("v", 0, video[:4]), Clip("v", 4, video[4:])]

    uninterrupted = VideoSegmenter(build_model(small_config), TCA, task=task, score_threshold=0.0)
    expected = [uninterrupted.process([clip])[0] for clip in clips]

    first_worker = VideoSegmenter(build_model(small_config), TCA, task=task, score_threshold=0.0)
    first_worker.process([clips[0]])
    state = first_worker.export_memory("v")
    second_worker = VideoSegmenter(build_model(small_config), TCA, task=task, score_threshold=0.0)
    second_worker.import_memory("v", state)
    continued = second_worker.process([clips[1]])[0]

    assert continued[0].stats.reset is None  # no warm-up needed
    _assert_same_results(continued, expected[1])
    if task == "instance":
        assert continued[0].instances  # the comparison covered tracked instances


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_interleaved_videos_match_separate_runs(small_config, task):
    a, b = smooth_video(6, 96, 128, seed=3), smooth_video(6, 96, 128, seed=4)
    alone = VideoSegmenter(build_model(small_config), TCA, task=task, score_threshold=0.0)
    expected_a = alone.process([Clip("a", 0, a[:3])])[0] + alone.process([Clip("a", 3, a[3:])])[0]
    expected_b = alone.process([Clip("b", 0, b[:3])])[0] + alone.process([Clip("b", 3, b[3:])])[0]

    together = VideoSegmenter(build_model(small_config), TCA, task=task, score_threshold=0.0)
    first = together.process([Clip("a", 0, a[:3]), Clip("b", 0, b[:3])])
    second = together.process([Clip("b", 3, b[3:]), Clip("a", 3, a[3:])])
    got_a, got_b = first[0] + second[1], first[1] + second[0]

    for got, expected in ((got_a, expected_a), (got_b, expected_b)):
        assert [r.stats.reset for r in got] == [r.stats.reset for r in expected]
        for g, e in zip(got, expected):
            if task == "semantic":
                assert (g.label_map == e.label_map).mean() > 0.999
            else:
                assert [i.id for i in g.instances] == [i.id for i in e.instances]
                for i, j in zip(g.instances, e.instances):
                    assert abs(i.score - j.score) < 1e-4
                    assert (i.mask == j.mask).mean() > 0.999


def test_memory_round_trip_and_bound():
    memory = VideoMemory()
    memory.cluster.update(torch.randn(4, 49, 8), torch.rand(4, 49, 16), 7, (14, 14, 8, 7, 4, 1))
    memory.tracks.embeddings, memory.tracks.ids, memory.tracks.next_id = torch.randn(5, 3), torch.arange(5), 6
    restored = VideoMemory.from_bytes(memory.to_bytes())
    assert torch.equal(restored.cluster.tokens, memory.cluster.tokens)
    assert torch.equal(restored.cluster.affinity, memory.cluster.affinity)
    assert restored.cluster.signature == memory.cluster.signature
    assert restored.cluster.frame_index == 7 and restored.tracks.next_id == 6
    assert torch.equal(restored.tracks.ids, memory.tracks.ids)

    bank = MemoryBank(max_videos=2)
    for video in ("a", "b", "a", "c"):
        bank.get(video)
    assert "a" in bank and "c" in bank and "b" not in bank and len(bank) == 2


def test_bad_clips_are_rejected_with_the_video_named(small_model):
    segmenter = VideoSegmenter(small_model, TCA)
    with pytest.raises(ValueError, match="'bad'.*uint8"):
        Clip("bad", 0, np.zeros((2, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="'bad'.*\\(T>0, H, W, 3\\)"):
        Clip("bad", 0, np.zeros((32, 32, 3), dtype=np.uint8))
    clip = Clip("twice", 0, random_frames(1, 32, 32))
    with pytest.raises(ValueError, match="one clip per video"):
        segmenter.process([clip, clip])


def test_tca_never_quantises_a_window_worse_than_per_frame_clustering():
    """A window keeps the clusters seeded from the memory only where they fit its tokens at least as
    well as per-frame clustering's; elsewhere it takes per-frame clustering's clusters unchanged."""
    torch.manual_seed(0)
    geometry = clustering.window_geometry(torch.ones(32, 7, 7, dtype=torch.bool), grid=3, radius=1)
    x = torch.randn(1, 32, 49, 16)
    per_frame = clustering.per_frame_clustering(x, geometry, iters=5, temperature=256.0)
    stable = torch.ones(1, 32, 49, dtype=torch.bool)

    unrelated = clustering.per_frame_clustering(torch.randn(1, 32, 49, 16), geometry, iters=5, temperature=256.0)
    centers, affinity, seeded = clustering.temporal_clustering(
        x, unrelated[1], stable, geometry, iters=1, temperature=256.0, per_frame=per_frame
    )
    error = clustering.quantisation_error
    assert (error(x, centers, geometry) <= error(x, per_frame[0], geometry) * clustering.SAME_FIT).all()
    assert 0 < (~seeded).sum() < seeded.numel()  # a memory of another frame helps some windows, not all
    torch.testing.assert_close(centers[~seeded], per_frame[0][~seeded])
    torch.testing.assert_close(affinity[~seeded], per_frame[1][~seeded])

    _, _, continued = clustering.temporal_clustering(
        x, per_frame[1], stable, geometry, iters=1, temperature=256.0, per_frame=per_frame
    )
    assert continued.all()  # the memory of this very frame: one more k-means round fits at least as well


def test_a_window_where_tokens_changed_needs_a_clearly_better_fit_to_keep_the_memory():
    """Seeded from the frame's own clusters, the memory fits every window about as well as per-frame
    clustering: windows where all tokens are stable keep it (a tie), windows with a changed token
    fall back, since the memory does not fit them CHANGED_MARGIN better."""
    torch.manual_seed(0)
    geometry = clustering.window_geometry(torch.ones(8, 7, 7, dtype=torch.bool), grid=3, radius=1)
    x = torch.randn(1, 8, 49, 16)
    per_frame = clustering.per_frame_clustering(x, geometry, iters=5, temperature=256.0)
    stable = torch.ones(1, 8, 49, dtype=torch.bool)
    stable[0, :3, 0] = False  # one changed token in each of the first three windows
    _, _, seeded = clustering.temporal_clustering(
        x, per_frame[1], stable, geometry, iters=1, temperature=256.0, per_frame=per_frame
    )
    assert seeded[0].tolist() == [False] * 3 + [True] * 5
