"""What importing the package costs: the readers of a run's output and the light modules of tca_core
load neither the job (Ray) nor the model (torch, transformers). Each check runs in a fresh
interpreter, since this one has imported everything already."""

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "transformers", "pipelines.nightly", "ray")
REPO = Path(__file__).resolve().parents[1]

READERS = """
import json, sys
from pathlib import Path

import pipelines.export, pipelines.render, pipelines.validate
from pipelines.cli import main
from pipelines.output import MASKS_SCHEMA, write_table

work = Path(sys.argv[1])
(work / "run").mkdir()
statuses = [
    main(["validate", str(work / "run")]),
    main(["export-ytvis", str(work / "run"), "--out", str(work / "results.json")]),
    main(["generate", "--out", str(work / "in"), "--videos", "1", "--frames", "2"]),
]
write_table([], MASKS_SCHEMA, work / "masks.parquet")
video = next((work / "in" / "videos").glob("*.mp4"))
statuses.append(main(["render", "--video", str(video), "--masks", str(work / "masks.parquet"), "--out", str(work)]))
print(json.dumps(dict(statuses=statuses, modules=sorted(sys.modules))))
"""

LIGHT = """
import json, sys

import tca_core, tca_core.config, tca_core.rle, tca_core.synthetic

before = sorted(sys.modules)
segmenter = tca_core.VideoSegmenter
print(json.dumps(dict(before=before, api=tca_core.__all__, loaded=segmenter.__module__)))
"""


def _run(script: str, *args: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=300
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_reading_a_runs_output_imports_neither_the_job_nor_torch(tmp_path):
    result = _run(READERS, str(tmp_path))
    assert result["statuses"] == [0, 0, 0, 0]  # validate, export-ytvis, generate and render ran
    assert [name for name in HEAVY if name in result["modules"]] == []


def test_the_light_modules_of_tca_core_load_the_public_api_only_when_asked():
    result = _run(LIGHT)
    assert [name for name in HEAVY if name in result["before"]] == []
    assert {"VideoSegmenter", "Clip", "FrameResult", "Instance", "AccelerationConfig", "EMBEDDED_MODEL"} <= set(
        result["api"]
    )
    assert result["loaded"] == "tca_core.segmenter"
