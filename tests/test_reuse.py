"""Window and frame reuse (tca_core.reuse): what is recomputed, when everything is, and that the
state moves between workers and videos without changing a result."""

import copy

import numpy as np
import pytest
import torch
from conftest import SMALL_HEAD
from helpers import SMALL_MODEL_CLUSTERING, smooth_video

from tca_core import reuse
from tca_core.config import AccelerationConfig
from tca_core.model import build_model, swin_mask2former_config
from tca_core.segmenter import Clip, VideoSegmenter

# Two blocks in every stage, so that the first stage has a shifted-window block after the first.
REUSE_SWIN = dict(embed_dim=32, depths=[2, 2, 2, 2], num_heads=[1, 2, 4, 8], window_size=7)
SIZE = (224, 224)  # the first stage: 56 x 56 tokens, 8 x 8 windows of 7 x 7
WINDOW_PIXELS = 28  # a first-stage window covers 7 tokens of 4 pixels a side


@pytest.fixture(scope="module")
def reuse_model():
    config = swin_mask2former_config(REUSE_SWIN, id2label={0: "disc", 1: "square"}, **SMALL_HEAD)
    return build_model(config, seed=0)


def segmenter(model, task="both", **settings):
    """A segmenter on its own copy of `model` (segmenters sharing a model share its backbone's settings)."""
    return VideoSegmenter(copy.deepcopy(model), AccelerationConfig(**settings), task=task, score_threshold=0.0)


TCA = dict(method="tca", grid=4, alpha=1, **SMALL_MODEL_CLUSTERING)


def still_clip(frames=6):
    return np.repeat(smooth_video(1, *SIZE), frames, axis=0)


def moving_square(frames, seed=0, still=3):
    """A still scene for `still` frames, then a 16-pixel square crossing part of it, 6 pixels a frame."""
    scene = smooth_video(1, *SIZE, seed=seed)[0]
    video = np.repeat(scene[None], frames, axis=0).copy()
    for t in range(still, frames):
        left = 40 + 6 * (t - still)
        video[t, 60:76, left : left + 16] = (250, 30, 30)
    return video


def same_results(got, expected):
    assert [r.frame_index for r in got] == [r.frame_index for r in expected]
    for g, e in zip(got, expected):
        assert np.array_equal(g.label_map, e.label_map)
        assert [(i.id, i.category_id, i.score) for i in g.instances] == [
            (i.id, i.category_id, i.score) for i in e.instances
        ]
        assert all(np.array_equal(i.mask, j.mask) for i, j in zip(g.instances, e.instances))
        assert (g.stats.windows_computed, g.stats.reuse_reset, g.stats.frame_reused) == (
            e.stats.windows_computed,
            e.stats.reuse_reset,
            e.stats.frame_reused,
        )


@pytest.mark.parametrize("method", [dict(method="none"), TCA], ids=["none", "tca"])
def test_on_a_still_clip_nothing_is_recomputed_after_the_first_frame_and_outputs_equal_the_first_frames(
    reuse_model, method
):
    results = segmenter(reuse_model, window_reuse=0.01, **method).process([Clip("v", 0, still_clip())])[0]
    assert [r.stats.windows_computed for r in results] == [1.0] + [0.0] * 5
    assert [r.stats.reuse_reset for r in results] == ["start"] + [None] * 5
    assert results[0].instances  # the comparison covers instances, not only label maps
    # with TCA the clustering step still runs on every frame (from the memory, not per frame), and the
    # reconstruction takes its weights: scores then move in the eighth decimal
    for later in results[1:]:
        assert np.array_equal(later.label_map, results[0].label_map)
        assert [i.id for i in later.instances] == [i.id for i in results[0].instances]
        assert np.allclose([i.score for i in later.instances], [i.score for i in results[0].instances], atol=1e-6)
        assert all(np.array_equal(i.mask, j.mask) for i, j in zip(later.instances, results[0].instances))


def test_frame_reuse_takes_a_still_frames_results_without_running_the_model(reuse_model):
    still = segmenter(reuse_model, frame_reuse=True, **TCA)
    first = still.process([Clip("v", 0, still_clip(4))])[0]
    second = still.process([Clip("v", 4, still_clip(4))])[0]  # reused from the previous clip's last frame
    assert [r.stats.frame_reused for r in first + second] == [False] + [True] * 7
    for later in first[1:] + second:
        assert np.array_equal(later.label_map, first[0].label_map)
        assert [i.id for i in later.instances] == [i.id for i in first[0].instances]

    drifting = segmenter(reuse_model, frame_reuse=True, **TCA)
    moved = drifting.process([Clip("w", 0, smooth_video(4, *SIZE))])[0]  # every frame moves by 2 pixels
    assert not any(r.stats.frame_reused for r in moved)
    assert [r.stats.reset for r in moved] == ["start", None, None, None]


def test_frames_reused_whole_do_not_break_tcas_memory(reuse_model):
    """A clip whose first frames were reused continues TCA's and window reuse's memories: no gap."""
    video = np.concatenate([still_clip(3), smooth_video(3, *SIZE, seed=1)])
    results = segmenter(reuse_model, frame_reuse=True, window_reuse=0.01, **TCA)
    first = results.process([Clip("v", 0, video[:3])])[0]
    second = results.process([Clip("v", 3, video[3:])])[0]
    assert [r.stats.frame_reused for r in first] == [False, True, True]
    assert second[0].stats.reset != "gap" and second[0].stats.reuse_reset != "gap"


def _window_counts(monkeypatch):
    """Per block key, the windows computed by the frames that were not computed whole."""
    counts = {}
    original = reuse.reusing_block

    def counting(runner, hidden, key, plan):
        before = [frame.computed for frame in plan.frames]
        out = original(runner, hidden, key, plan)
        counts[key] = [f.computed - b for f, b in zip(plan.frames, before) if not f.full]
        return out

    monkeypatch.setattr(reuse, "reusing_block", counting)
    return counts


def test_a_change_inside_one_window_recomputes_that_window_and_the_shifted_windows_over_it_only(
    reuse_model, monkeypatch
):
    still = smooth_video(1, *SIZE)[0]
    changed = still.copy()
    row, col = 2, 3  # an inner window of the first stage's 8 x 8
    top, left = row * WINDOW_PIXELS + 6, col * WINDOW_PIXELS + 6
    changed[top : top + 12, left : left + 12] = 255 - changed[top : top + 12, left : left + 12]

    reusing = segmenter(reuse_model, window_reuse=1e-6, pixel_change=0.01)
    reusing.process([Clip("v", 0, still[None])])
    counts = _window_counts(monkeypatch)
    result = reusing.process([Clip("v", 1, changed[None])])[0][0]

    tokens = torch.zeros(1, 56 * 56, 1)
    grid = tokens.view(56, 56)
    grid[row * 7 : row * 7 + 7, col * 7 : col * 7 + 7] = 1  # the changed window's tokens
    shifted = reuse.WindowLayout(56, 56, 7, 3).partition(tokens)[0].amax(dim=(1, 2)) > 0
    assert counts["1.0"] == [1]
    assert counts["1.1"] == [int(shifted.sum())] == [4]
    assert result.stats.windows_computed < 1.0

    full = segmenter(reuse_model).process([Clip("v", 1, changed[None])])[0][0]
    assert (result.label_map == full.label_map).mean() > 0.999
    # the backbone's features of the changed frame, with reuse and without: within 1e-3
    features = segmenter(reuse_model, window_reuse=1e-6, pixel_change=0.01)
    _features(features, still, frame_index=0)
    ours = _features(features, changed, frame_index=1)
    theirs = _features(segmenter(reuse_model), changed, frame_index=0)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)


PADDED = (224, 240)  # 56 x 60 first-stage tokens: every stage's map is padded to whole windows


def test_on_a_map_padded_to_whole_windows_gathered_windows_match_the_model_and_their_mlp_skips_the_padding(
    reuse_model, monkeypatch
):
    from tca_core.flops import flops_by_module
    from tca_core.swin import BlockRunner

    still = smooth_video(1, *PADDED)[0]
    changed = still.copy()
    changed[30:42, 200:212] = 255 - changed[30:42, 200:212]  # inside the first stage's last, padded, column
    reusing = segmenter(reuse_model, window_reuse=1e-6, pixel_change=0.01)
    assert reusing.processing_size(*PADDED) == PADDED
    reusing.process([Clip("v", 0, still[None])])

    tokens, original = {}, BlockRunner.windows  # per block: the tokens its gathered windows ran the MLP on

    def counting(runner, raw, normed, ids, valid=None):
        tokens[id(runner.block)] = (int(valid.sum()) if valid is not None else raw.shape[0] * raw.shape[1], raw.shape)
        return original(runner, raw, normed, ids, valid)

    monkeypatch.setattr(BlockRunner, "windows", counting)
    flops = flops_by_module(reusing.process, [Clip("v", 1, changed[None])])
    names = {id(module): name for name, module in reusing.model.named_modules()}
    blocks = dict(reusing.model.named_modules())
    assert tokens and any(count < shape[0] * shape[1] for count, shape in tokens.values())
    for block, (count, _) in tokens.items():
        fc1 = blocks[names[block]].mlp.fc1
        counted = next(v for k, v in flops.items() if k.endswith(names[block] + ".mlp.fc1"))
        assert counted == 2 * count * fc1.in_features * fc1.out_features

    monkeypatch.undo()
    features = segmenter(reuse_model, window_reuse=1e-6, pixel_change=0.01)
    _features(features, still, frame_index=0)
    ours = _features(features, changed, frame_index=1)
    theirs = _features(segmenter(reuse_model), changed, frame_index=0)
    for a, b in zip(ours, theirs):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3)


def test_gathered_windows_on_a_padded_map_run_in_half_precision_and_stay_close_to_float(reuse_model):
    still = smooth_video(1, *PADDED)[0]
    changed = still.copy()
    changed[30:42, 200:212] = 255 - changed[30:42, 200:212]  # inside the last, padded, column
    clip = np.stack([still, changed])
    settings = AccelerationConfig(window_reuse=1e-6, pixel_change=0.01)
    half = VideoSegmenter(copy.deepcopy(reuse_model).half(), settings, task="both", score_threshold=0.0)
    assert half.dtype == torch.float16
    results = half.process([Clip("v", 0, clip)])[0]  # float32 padding weights once met float16 windows here
    assert 0.0 < results[1].stats.windows_computed < 1.0
    full = segmenter(reuse_model, window_reuse=1e-6, pixel_change=0.01).process([Clip("v", 0, clip)])[0]
    assert (results[1].label_map == full[1].label_map).mean() > 0.99


def _features(seg, frame, frame_index):
    """The backbone's feature maps of one frame, as the segmenter runs it for that video frame."""
    from tca_core.swin import FrameStream

    memory = seg.memories.get("v")
    patches = reuse.patch_means(seg._resized(frame[None]))
    stream = FrameStream(memory.cluster, [frame_index], memory.reuse, frozenset(), patches)
    with torch.inference_mode(), seg.backbone.streaming([stream]):
        return seg.backbone(seg._preprocess(frame[None])).feature_maps


def test_a_scene_cut_and_a_refresh_recompute_everything(reuse_model):
    other = smooth_video(1, *SIZE, seed=7)
    video = np.concatenate([still_clip(2), other])
    cut = segmenter(reuse_model, window_reuse=0.01).process([Clip("v", 0, video)])[0]
    assert [r.stats.reuse_reset for r in cut] == ["start", None, "changed"]
    assert [r.stats.windows_computed for r in cut] == [1.0, 0.0, 1.0]

    refreshed = segmenter(reuse_model, window_reuse=0.01, refresh=3).process([Clip("v", 0, still_clip(7))])[0]
    assert [r.stats.reuse_reset for r in refreshed] == ["start", None, None, "refresh", None, None, "refresh"]
    assert [r.stats.windows_computed for r in refreshed] == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]


def _scene(height, width, seed=0):
    """A textured still scene larger than the frames cut from it."""
    return smooth_video(1, height, width, seed=seed)[0].astype(np.float32)


def _patches(frames):
    return reuse.patch_means(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255)


def _zoomed(scene, zoom, size):
    """The centre of `scene` seen `zoom` times closer, at `size`."""
    image = torch.from_numpy(scene).permute(2, 0, 1)[None]
    height, width = round(scene.shape[0] * zoom), round(scene.shape[1] * zoom)
    image = torch.nn.functional.interpolate(image, size=(height, width), mode="bilinear", align_corners=False)[0]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    return image[:, top : top + size[0], left : left + size[1]].permute(1, 2, 0).numpy()


def test_the_camera_test_sees_a_pan_and_a_zoom_and_not_a_change_of_light_or_a_moving_object():
    scene = _scene(160, 320)
    pan = np.stack([scene[16:144, 3 * t : 3 * t + 192] for t in range(5)])  # 3 pixels a frame
    zoom = np.stack([_zoomed(scene, 1 + 0.02 * t, (128, 192)) for t in range(5)])
    still = np.repeat(scene[None, 16:144, 40:232], 5, axis=0)
    light = still * np.linspace(1.0, 0.7, 5)[:, None, None, None]  # 30% darker over the clip
    moving = still.copy()
    for t in range(5):  # a bright 24-pixel square crossing the view, 10 pixels a frame
        moving[t, 50:74, 30 + 10 * t : 54 + 10 * t] = 255
    frames = {name: np.clip(v, 0, 255).astype(np.uint8) for name, v in locals().items() if isinstance(v, np.ndarray)}
    assert reuse.camera_moved(_patches(frames["pan"]), None) == [False] + [True] * 4
    assert reuse.camera_moved(_patches(frames["zoom"]), None) == [False] + [True] * 4
    for name in ("still", "light", "moving"):
        assert reuse.camera_moved(_patches(frames[name]), None) == [False] * 5, name
    # The frame before the clip, when given, is what the clip's first frame is tested against.
    assert reuse.camera_moved(_patches(frames["pan"][1:]), _patches(frames["pan"][:1])[0]) == [True] * 4


def test_a_panning_camera_computes_its_frames_whole_and_a_still_one_with_a_moving_object_does_not(reuse_model):
    pan = smooth_video(4, *SIZE)  # the scene drifts 2 pixels a frame
    panned = segmenter(reuse_model, window_reuse=0.05).process([Clip("v", 0, pan)])[0]
    assert [r.stats.reuse_reset for r in panned] == ["start", "camera", "camera", "camera"]
    assert [r.stats.windows_computed for r in panned] == [1.0] * 4
    square = segmenter(reuse_model, window_reuse=0.05).process([Clip("v", 0, moving_square(5))])[0]
    assert [r.stats.reuse_reset for r in square] == ["start", None, None, None, None]
    assert all(r.stats.windows_computed < 0.5 for r in square[3:])


def test_a_seek_and_a_size_change_recompute_everything(reuse_model):
    seg = segmenter(reuse_model, window_reuse=0.01)
    seg.process([Clip("v", 0, still_clip(2))])
    assert seg.process([Clip("v", 10, still_clip(1))])[0][0].stats.windows_computed == 1.0  # a seek
    smaller = np.repeat(smooth_video(1, 112, 168), 2, axis=0)
    resized = seg.process([Clip("v", 11, smaller)])[0]
    assert [r.stats.reuse_reset for r in resized] == ["size_change", None]


def _interrupted_and_uninterrupted(model, settings, video, split):
    uninterrupted = segmenter(model, **settings)
    expected = uninterrupted.process([Clip("v", 0, video[:split])])[0]
    expected += uninterrupted.process([Clip("v", split, video[split:])])[0]
    first = segmenter(model, **settings)
    got = first.process([Clip("v", 0, video[:split])])[0]
    state = first.export_memory("v")
    second = segmenter(model, **settings)
    second.import_memory("v", state)
    return got + second.process([Clip("v", split, video[split:])])[0], expected


def test_export_import_and_continue_is_bit_identical_to_an_uninterrupted_run(reuse_model):
    video = moving_square(7)  # still frames (reused whole), then a square moving (windows reused around it)
    settings = dict(window_reuse=0.05, frame_reuse=True, **TCA)
    got, expected = _interrupted_and_uninterrupted(reuse_model, settings, video, split=2)
    same_results(got, expected)
    assert got[2].stats.frame_reused  # the continued clip began on a frame reused from the imported memory
    assert any(0 < r.stats.windows_computed < 1 for r in got)  # and went on with windows reused


def test_two_videos_interleaved_in_one_batch_equal_each_run_alone(reuse_model):
    a, b = moving_square(6, seed=3, still=2), moving_square(6, seed=4, still=0)
    settings = dict(window_reuse=0.05, frame_reuse=True, **TCA)
    alone = segmenter(reuse_model, **settings)
    expected_a = alone.process([Clip("a", 0, a[:3])])[0] + alone.process([Clip("a", 3, a[3:])])[0]
    expected_b = alone.process([Clip("b", 0, b[:3])])[0] + alone.process([Clip("b", 3, b[3:])])[0]
    together = segmenter(reuse_model, **settings)
    first = together.process([Clip("a", 0, a[:3]), Clip("b", 0, b[:3])])
    second = together.process([Clip("b", 3, b[3:]), Clip("a", 3, a[3:])])
    for got, expected in ((first[0] + second[1], expected_a), (first[1] + second[0], expected_b)):
        assert [(r.stats.frame_reused, r.stats.reuse_reset) for r in got] == [
            (r.stats.frame_reused, r.stats.reuse_reset) for r in expected
        ]
        for g, e in zip(got, expected):
            assert (g.label_map == e.label_map).mean() > 0.999
            assert [i.id for i in g.instances] == [i.id for i in e.instances]


def test_the_reuse_cache_is_bounded_and_dropped_with_the_video(reuse_model):
    seg = segmenter(reuse_model, window_reuse=0.05, frame_reuse=True, **TCA)
    video = smooth_video(12, *SIZE)
    seg.process([Clip("v", 0, video[:4])])
    size = seg.memories.get("v").reuse.nbytes()
    seg.process([Clip("v", 4, video[4:8])])
    seg.process([Clip("v", 8, video[8:])])
    assert seg.memories.get("v").reuse.nbytes() == size > 0
    seg.drop("v")
    assert seg.videos_in_memory == 0


@pytest.mark.parametrize(
    "settings", [dict(window_reuse=0), dict(window_reuse=-0.1), dict(pixel_change=0), dict(refresh=0)]
)
def test_bad_reuse_settings_are_refused_naming_them(settings):
    with pytest.raises(ValueError, match=next(iter(settings))):
        AccelerationConfig(**settings)


def test_the_job_reports_the_windows_and_frames_reused_in_its_frames_table_summary_and_manifest(reuse_model, tmp_path):
    """The nightly job (local Ray) on a still video, with reuse from an acceleration file."""
    import json
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from pipelines.video_io import write_mp4
    from tca_core.config import write_acceleration_file

    checkpoint = tmp_path / "model"
    reuse_model.save_pretrained(checkpoint)
    archive = tmp_path / "archive"
    archive.mkdir()
    write_mp4(archive / "still.mp4", np.repeat(smooth_video(1, 96, 128), 12, axis=0), fps=10)
    settings = tmp_path / "reuse.json"
    write_acceleration_file(
        settings, AccelerationConfig(window_reuse=0.05, frame_reuse=True, pixel_change=0.05), "test"
    )
    command = [sys.executable, "-m", "pipelines.nightly", "--input", str(archive), "--output", str(tmp_path / "out")]
    options = ["--model", str(checkpoint), "--method", "none", "--acceleration", str(settings), "--short-side", "96"]
    subprocess.run([*command, *options], check=True, capture_output=True, timeout=600)

    manifests = tmp_path / "out" / "manifests"
    manifest = pq.read_table(next(manifests.glob("*.parquet"))).to_pylist()[0]
    summary = json.loads(next(manifests.glob("*.summary.json")).read_text())
    frames = pq.read_table(next((tmp_path / "out" / "frames").glob("*.parquet"))).to_pylist()
    reused = sum(row["frame_reused"] for row in frames)
    assert 0 < reused < len(frames) == 12  # a codec's still frames: most reused, never the first
    assert manifest["frames_reused"] == summary["frames_reused"] == reused
    assert json.loads(manifest["settings"])["acceleration"]["frame_reuse"] is True
    computed = [row["windows_computed"] for row in frames if not row["frame_reused"]]
    assert manifest["windows_computed"] == pytest.approx(np.mean([r["windows_computed"] for r in frames]))
    assert computed[0] == 1.0


def test_kept_attention_biases_are_made_once_and_follow_a_change_of_the_blocks_weights(reuse_model):
    seg = segmenter(reuse_model, window_reuse=0.1, **TCA)
    seg.process([Clip("v", 0, moving_square(4))])  # gathers windows: the biases and masks are kept
    backbone, grid = seg.backbone, TCA["grid"]
    block = backbone.backbone.swin.encoder.layers[2].blocks[1]
    table = block.attention.relative_position_bias.relative_position_bias_table
    with torch.inference_mode():
        kept = backbone._bias(block, grid, torch.float32)
        assert backbone._bias(block, grid, torch.float32) is kept
    with torch.no_grad():
        table.add_(0.5)  # as loading other weights into the model in place does
    with torch.inference_mode():
        changed = backbone._bias(block, grid, torch.float32)
    assert not torch.equal(changed, kept)
    assert torch.equal(changed, backbone._made_bias(table, grid, torch.float32))
    # where gradients are recorded, the bias is made afresh and follows its table
    assert backbone._bias(block, grid, torch.float32).requires_grad
