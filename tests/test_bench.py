"""`tca-segment bench --quick`: the trade-off sweep runs end to end, on each held-out set of generated
videos (static and moving camera) and pooled over them, and writes what it promises."""

import json

import numpy as np
import pytest

from pipelines.cli import main
from pipelines.sweep import FIDELITY_FOR_DEFAULT, CostVideos, SweepData, set_suffix
from tca_core.config import AccelerationConfig
from tca_core.model import tuned_acceleration
from tca_core.synthetic import HELD_OUT_SETS, SyntheticVideo

SUFFIXES = [set_suffix(name) for name in HELD_OUT_SETS]
PER_SET = ("fidelity_miou", "fidelity_instance_iou", "feature_cosine", "speedup_model", "speedup_backbone")
PER_SET += ("gt_miou", "gt_ap")
KEYS = {"method", "setting", "gflops_backbone", "fidelity_miou_real", "feature_cosine_real", *PER_SET}
KEYS |= {f"{key}_{suffix}" for key in (*PER_SET, "gflops_backbone", "gflops_model") for suffix in SUFFIXES}


def _check_ranges(row: dict, full: dict):
    """A row's columns, per set and pooled, within their ranges (not accuracy: the shipped model
    predates the generator)."""
    for suffix in ["", *(f"_{s}" for s in SUFFIXES)]:
        assert 0 <= row[f"gt_miou{suffix}"] <= 1 and 0 <= row[f"gt_ap{suffix}"] <= 1
        if row["method"] == "none":
            assert row[f"fidelity_miou{suffix}"] == 1.0 and row[f"speedup_backbone{suffix}"] == 1.0
            continue
        assert 0 < row[f"fidelity_miou{suffix}"] <= 1 and 0 <= row[f"fidelity_instance_iou{suffix}"] <= 1
        assert -1 <= row[f"feature_cosine{suffix}"] <= 1
        assert row[f"speedup_backbone{suffix}"] > 0 and row[f"speedup_model{suffix}"] > 0
    for key in ("fidelity_instance_iou", "feature_cosine"):  # pooled: means over both sets' values
        per_set = [row[f"{key}_{s}"] for s in SUFFIXES]
        assert min(per_set) - 1e-9 <= row[key] <= max(per_set) + 1e-9
    per_set_cost = [row[f"gflops_backbone_{s}"] for s in SUFFIXES]
    if row["config"]["window_reuse"] is not None or row["config"]["frame_reuse"]:  # counted on each set's videos
        assert row["gflops_backbone"] == pytest.approx(sum(per_set_cost) / len(per_set_cost))
    else:  # work that does not depend on the video: one count
        assert per_set_cost == [row["gflops_backbone"]] * len(SUFFIXES)
    if row["method"] != "none":
        assert row["gflops_backbone"] < full["gflops_backbone"]  # clustering removes work
        assert 0 < row["fidelity_miou_real"] <= 1 and 0 < row["feature_cosine_real"] <= 1


def test_quick_bench_writes_results_plot_and_default(tmp_path, capsys):
    assert main(["bench", "--quick", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "results.json").read_text())
    assert all(KEYS <= set(row) for row in rows)
    full = [r for r in rows if r["method"] == "none"]
    assert len(full) == 1
    assert {r["method"] for r in rows} == {"none", "clustering", "tca"}
    for row in rows:
        _check_ranges(row, full[0])
    table = (tmp_path / "results.md").read_text()
    assert all(f"{s}: fidelity mIoU" in table and f"{s}: backbone GFLOPs" in table for s in SUFFIXES)
    assert (tmp_path / "tradeoff.png").stat().st_size > 10_000
    report = json.loads((tmp_path / "report.json").read_text())
    assert set(report["generated_videos"]["sets"]) == set(HELD_OUT_SETS)
    _check_claim(report)
    assert (tmp_path / "claim.png").stat().st_size > 10_000
    assert "fastest TCA setting" in capsys.readouterr().out
    if report["default"]:  # the chosen point, reaching the target on both sets, ready to sit beside the checkpoint
        assert all(report["default"][f"fidelity_miou_{s}"] >= FIDELITY_FOR_DEFAULT for s in SUFFIXES)
        tuned = tuned_acceleration(tmp_path, "tca")
        assert (tuned.alpha, tuned.grid) == (report["default"]["config"]["alpha"], report["default"]["config"]["grid"])


def _check_claim(report: dict):
    """The claim check: records per held-out set and baseline, intervals around the differences."""
    checks = report["claim"]
    assert {(c["set"], c["against"]) for c in checks} == {
        (name, against) for name in HELD_OUT_SETS for against in ("clustering", "clustering+residual")
    }
    for name in HELD_OUT_SETS:  # the same settings on each set
        assert sorted(c["setting"] for c in checks if c["set"] == name) == sorted(
            c["setting"] for c in checks if c["set"] == next(iter(HELD_OUT_SETS))
        )
    for check in checks:  # paired bootstrap intervals around the measured differences
        for key in ("gt_miou", "gt_ap"):
            low, high = check[f"{key}_interval"]
            assert low <= check[f"{key}_gain"] + 1e-9 and check[f"{key}_gain"] <= high + 1e-9
    summary = report["claim_summary"]
    assert set(summary) == {"clustering", "clustering+residual"}
    for counts in summary.values():
        assert set(counts["by_set"]) == set(HELD_OUT_SETS)
        for per_set in counts["by_set"].values():
            assert counts["accuracy_not_lower"] <= per_set["accuracy_not_lower"] <= per_set["settings"]


@pytest.mark.parametrize("keys", [("fidelity_miou_static", "fidelity_miou_moving"), ("fidelity_miou",)])
def test_the_default_is_the_cheapest_tca_point_reaching_the_target_on_every_key(keys):
    from pipelines.sweep import choose_default

    def row(gflops, static, moving):
        return dict(
            method="tca",
            gflops_backbone=gflops,
            fidelity_miou=min(static, moving),
            **{"fidelity_miou_static": static, "fidelity_miou_moving": moving},
        )

    rows = [row(1.0, 0.99, 0.96), row(2.0, 0.98, 0.98), row(2.01, 0.975, 0.99), row(3.0, 1.0, 1.0)]
    assert choose_default(rows, 0.97, keys=keys) is rows[1]  # the cheapest reaching 0.97 on both; tie: best worst set
    assert choose_default(rows, 0.95, keys=keys) is rows[0]
    assert choose_default(rows, 1.01, keys=keys) is None


def test_reusing_points_are_counted_on_the_sweeps_own_frames_over_one_refresh_period():
    """The full bench counts a reusing point on each set's videos as the sweep ran them, cut to the
    default's refresh period (the first frames of the sweep's video, not a shorter generated one)."""
    data = SweepData.for_run(quick=False)
    videos = CostVideos.of_sweep(data)
    assert set(videos.sets) == set(SUFFIXES) and len(videos.short[0]) == 2 * data.clip_frames
    for name, seeds in data.sets.items():
        counted = videos.sets[set_suffix(name)]
        assert len(counted) == len(seeds)
        for seed, video in zip(seeds, counted):
            assert len(video) == AccelerationConfig().refresh < data.num_frames
            whole = SyntheticVideo(seed, data.num_frames, camera=HELD_OUT_SETS[name]).frames()[0]
            assert np.array_equal(video, whole[: len(video)])


def test_the_device_reuse_benchmark_runs_from_saved_frames_in_half_precision(tmp_path):
    from benchmarks import reuse_device

    frames = tmp_path / "held_out.npz"
    reuse_device.main(["--save", str(frames), "--videos", "1", "--frame-count", "8"])
    with np.load(frames) as saved:
        assert sorted(saved.files) == ["moving-camera.0", "static-camera.0"]
        assert saved["static-camera.0"].shape[0] == 8 and saved["static-camera.0"].dtype == np.uint8
    out = tmp_path / "reuse_device.json"
    args = ["--frames", str(frames), "--models", "embedded", "--rounds", "1", "--device", "cpu", "--dtype", "float16"]
    report = reuse_device.main([*args, "--out", str(out)])
    assert json.loads(out.read_text()) == report and report["dtype"] == "float16"
    for points in report["models"]["embedded"].values():
        assert points["none"]["model_vs_none"] == 1.0 and points["none"]["windows_computed"] is None
        assert all(p["model_seconds"] > 0 and p["backbone_seconds"] > 0 for p in points.values())
        assert 0 < points["tca +reuse 0.25"]["windows_computed"] <= 1.0
