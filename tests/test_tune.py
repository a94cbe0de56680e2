"""`tca-segment tune`: label-free calibration on the user's own videos, written as an acceleration file
that the job then runs with."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.cli import main
from tca_core.config import AccelerationConfig, read_acceleration_file

VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "data" / "videos"


@pytest.fixture(scope="module")
def tuned(tiny_model, tmp_path_factory):
    """tune --quick on one segment of a sample video; target 0: every TCA point qualifies."""
    out = tmp_path_factory.mktemp("tune") / "tuned.json"
    args = ["tune", "--model", tiny_model, "--input", str(VIDEOS / "milk.mkv"), "--out", str(out), "--quick"]
    assert main([*args, "--short-side", "64", "--segments", "2", "--segment-frames", "8", "--target", "0"]) == 0
    return out, json.loads(out.with_suffix(".report.json").read_text())


def test_tune_writes_the_cheapest_point_that_reaches_the_target(tuned):
    out, report = tuned
    assert (report["videos"], report["segments"], report["frames"]) == (1, 2, 16)
    rows = report["rows"]
    assert rows[0]["method"] == "none" and len(rows) == 14  # the quick sweep's 13 points after `none`
    for row in rows[1:]:
        assert 0 <= row["fidelity_miou"] <= 1 and -1 <= row["feature_cosine"] <= 1 and row["speedup_backbone"] > 0
    cheapest = min(r["gflops_backbone"] for r in rows if r["method"] == "tca")
    assert report["chosen"]["method"] == "tca" and report["chosen"]["gflops_backbone"] <= 1.01 * cheapest
    written = read_acceleration_file(out, "tca")
    chosen = AccelerationConfig(**report["chosen"]["config"])
    assert (written.alpha, written.grid, written.temperature, written.tau) == (
        chosen.alpha,
        chosen.grid,
        chosen.temperature,
        chosen.tau,
    )
    assert "tca-segment tune" in json.loads(out.read_text())["chosen_by"]


def test_an_unreachable_target_writes_nothing_and_fails(tiny_model, tmp_path):
    out = tmp_path / "none.json"
    args = ["tune", "--model", tiny_model, "--input", str(VIDEOS / "milk.mkv"), "--out", str(out), "--quick"]
    assert main([*args, "--short-side", "64", "--segments", "1", "--segment-frames", "8", "--target", "1.01"]) == 1
    assert not out.exists() and out.with_suffix(".report.json").is_file()


def test_an_input_without_videos_is_refused_naming_it(tiny_model, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: no videos found"):
        main(["tune", "--model", tiny_model, "--input", str(tmp_path / "empty"), "--out", str(tmp_path / "t.json")])


def test_the_job_runs_with_the_tuned_file_and_its_manifest_says_so(tuned, tiny_model, tmp_path):
    out, report = tuned
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / "milk.mkv").symlink_to(VIDEOS / "milk.mkv")
    command = [sys.executable, "-m", "pipelines.nightly", "--input", str(archive), "--output", str(tmp_path / "out")]
    options = ["--model", tiny_model, "--method", "tca", "--acceleration", str(out), "--short-side", "48"]
    subprocess.run([*command, *options], check=True, capture_output=True, timeout=600)
    manifest = pq.read_table(next((tmp_path / "out" / "manifests").glob("*.parquet"))).to_pylist()
    ran = json.loads(manifest[0]["settings"])["acceleration"]
    assert ran["method"] == "tca" and ran["alpha"] == report["chosen"]["config"]["alpha"]
    assert (ran["grid"], ran["tau"]) == (report["chosen"]["config"]["grid"], report["chosen"]["config"]["tau"])
