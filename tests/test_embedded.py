"""The shipped model: offline loading, its cost split, the accuracy bar on each held-out set of
generated videos, the demo and the evaluation command."""

import json
import os
import subprocess
import sys

import pytest

from pipelines.cli import main
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.evaluation import evaluate_generated
from tca_core.model import tuned_acceleration
from tca_core.segmenter import VideoSegmenter
from tca_core.synthetic import CATEGORIES, HELD_OUT_SEED, HELD_OUT_SETS, held_out_videos

# Fixed held-out videos of each set, small enough for CI; `tca-segment evaluate` runs the full sets
# (docs/model_card.md).
CI_VIDEOS, CI_FRAMES = 4, 24


def test_weights_ship_inside_the_package_within_25_mb():
    weights = EMBEDDED_MODEL / "model.safetensors"
    assert weights.is_file() and weights.stat().st_size <= 25 * 2**20
    assert json.loads((EMBEDDED_MODEL / "config.json").read_text())["model_type"] == "mask2former"


def test_loads_offline_with_an_empty_cache(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), TRANSFORMERS_OFFLINE="1")
    script = (
        "from tca_core.segmenter import VideoSegmenter; from tca_core.config import EMBEDDED_MODEL; "
        "s = VideoSegmenter.from_pretrained(EMBEDDED_MODEL); print(sorted(s.labels.values()))"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(sorted(CATEGORIES.values()))


@pytest.fixture(scope="module")
def shipped():
    return VideoSegmenter.from_pretrained(EMBEDDED_MODEL, task="both")


def test_the_backbone_is_most_of_the_cost_as_in_a_large_swin(shipped):
    """At the processing size of the training frames (224x336), counted by torch.utils.flop_counter
    (`tca_core.flops`, attention included): the backbone at least 75% of the model's FLOPs, stage 3
    holding most of the depth, window 7 or 12."""
    import torch

    from tca_core.flops import flops_by_module

    model = shipped.model
    pixels = torch.zeros(1, 3, 224, 336, dtype=next(model.parameters()).dtype)
    with torch.no_grad():
        counts = flops_by_module(model, pixel_values=pixels)
    backbone = next(v for k, v in counts.items() if k.endswith("pixel_level_module.encoder"))
    assert backbone >= 0.75 * counts["Global"]
    swin = model.config.backbone_config
    assert swin.depths[2] > sum(swin.depths) / 2 and swin.window_size in (7, 12)


# The bar is semantic mIoU >= 0.80 on each held-out set; the shipped model does not reach it
# yet (docs/model_card.md: 0.706 and 0.613 on 16 videos x 48 frames). These guards sit below what it
# measures on the CI videos (mIoU 0.573 static, 0.599 moving; AP 0.221, 0.368), so a model that
# loses what it learned fails.
CI_MIOU, CI_AP = 0.50, 0.15


@pytest.mark.parametrize("set_name", HELD_OUT_SETS)
def test_full_model_keeps_its_measured_accuracy_on_each_held_out_set(shipped, set_name):
    shipped.acceleration = AccelerationConfig(method="none")
    metrics = evaluate_generated(shipped, held_out_videos(set_name, CI_VIDEOS, CI_FRAMES))
    assert metrics["miou"] >= CI_MIOU, metrics
    assert metrics["ap"] >= CI_AP, metrics
    assert metrics["interval"]["ap"][0] <= metrics["ap"] <= metrics["interval"]["ap"][1]


def test_tca_at_the_shipped_setting_stays_close_to_the_full_model(shipped):
    videos = held_out_videos("moving-camera", 2, CI_FRAMES)
    shipped.acceleration = AccelerationConfig(method="none")
    full = evaluate_generated(shipped, videos)
    shipped.acceleration = tuned_acceleration(EMBEDDED_MODEL, "tca")
    accelerated = evaluate_generated(shipped, videos)
    assert accelerated["miou"] >= full["miou"] - 0.05, (accelerated, full)


def test_demo_produces_its_files(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--frames", "12"]) == 0
    printed = capsys.readouterr().out
    for name in ("frames: 12", "frames/s", "token reduction", "mIoU", "output:", "rendered:"):
        assert name in printed, printed
    video_id = f"{HELD_OUT_SEED}.mp4"
    for path in (
        tmp_path / "input" / "videos" / video_id,
        tmp_path / "input" / "annotations.json",
        tmp_path / "masks" / f"{video_id}.parquet",
        tmp_path / "frames" / f"{video_id}.parquet",
        tmp_path / "overlay.mp4",
        tmp_path / "overlay.png",
    ):
        assert path.is_file() and path.stat().st_size > 0, path


def test_evaluate_against_another_method_reports_paired_differences_and_draws_sheets(tmp_path):
    out = tmp_path / "eval.json"
    args = ["evaluate", "--videos", "2", "--frames", "8", "--method", "tca", "--against", "none", "--json", str(out)]
    assert main([*args, "--set", "static-camera", "--sheets", str(tmp_path / "sheets")]) == 0
    report = json.loads(out.read_text())
    assert list(report) == ["static-camera"]
    assert (tmp_path / "sheets" / "static-camera.png").stat().st_size > 0
    metrics = report["static-camera"]
    assert metrics["interval"]["miou"][0] <= metrics["miou"] <= metrics["interval"]["miou"][1]
    assert (metrics["method"], metrics["against"]["method"], metrics["videos"]) == ("tca", "none", 2)
    difference = metrics["against"]["difference"]
    assert difference["miou"]["difference"] == pytest.approx(metrics["miou"] - metrics["against"]["miou"])
    assert difference["ap"]["low"] <= difference["ap"]["high"]
