"""The shipped model: offline loading, the accuracy bar on held-out generated videos, the demo."""

import json
import os
import subprocess
import sys

import pytest

from pipelines.cli import main
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.evaluation import evaluate_generated
from tca_core.segmenter import VideoSegmenter
from tca_core.synthetic import CATEGORIES, HELD_OUT_SEED

# A fixed held-out set small enough for CI; `tca-segment evaluate` runs the full one (docs/model_card.md).
CI_HELD_OUT = [HELD_OUT_SEED + i for i in range(4)]


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


def test_full_model_reaches_the_accuracy_bar(shipped):
    shipped.acceleration = AccelerationConfig(method="none")
    metrics = evaluate_generated(shipped, CI_HELD_OUT, num_frames=24)
    assert metrics["miou"] >= 0.80, metrics
    assert metrics["ap"] >= 0.5, metrics


def test_tca_stays_close_to_the_full_model(shipped):
    shipped.acceleration = AccelerationConfig(method="tca")
    metrics = evaluate_generated(shipped, CI_HELD_OUT[:2], num_frames=24)
    assert metrics["miou"] >= 0.75, metrics


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


def test_evaluate_against_another_method_reports_paired_differences(tmp_path):
    out = tmp_path / "eval.json"
    args = ["evaluate", "--videos", "2", "--frames", "8", "--method", "tca", "--against", "none", "--json", str(out)]
    assert main(args) == 0
    metrics = json.loads(out.read_text())
    assert (metrics["method"], metrics["against"]["method"], metrics["videos"]) == ("tca", "none", 2)
    difference = metrics["against"]["difference"]
    assert difference["miou"]["difference"] == pytest.approx(metrics["miou"] - metrics["against"]["miou"])
    assert difference["ap"]["low"] <= difference["ap"]["high"]
