"""--acceleration FILE: a settings file chosen for a checkpoint (by `tca-segment tune` or `bench`)
replaces the checkpoint's own, in the job, the CLI and the Serve endpoint alike."""

import pytest

from deploy.jobs import job_arguments, job_config
from deploy.schemas import JobRequest, ServiceOptions
from pipelines.cli import parser as cli_parser
from pipelines.nightly import JobConfig, parse_args
from tca_core.config import AccelerationConfig, write_acceleration_file
from tca_core.model import tuned_acceleration


@pytest.fixture
def settings_file(tmp_path):
    path = tmp_path / "tuned.json"
    write_acceleration_file(path, AccelerationConfig(method="tca", alpha=5, grid=4, tau=0.8), chosen_by="a test")
    return path


def test_the_file_replaces_the_checkpoints_settings_in_the_jobs_signature(settings_file):
    shipped = JobConfig(output="out").settings()["acceleration"]
    chosen = JobConfig(output="out", acceleration=str(settings_file)).settings()["acceleration"]
    assert (chosen["alpha"], chosen["grid"], chosen["tau"]) == (5, 4, 0.8)
    assert chosen != shipped  # another signature: the videos are recomputed under the new settings
    assert tuned_acceleration("unused", "clustering", settings_file).method == "clustering"
    assert tuned_acceleration("unused", "none", settings_file) == AccelerationConfig(method="none")


def test_a_missing_or_invalid_file_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"nope\.json: cannot read"):
        JobConfig(output="out", acceleration=str(tmp_path / "nope.json")).settings()
    bad = tmp_path / "bad.json"
    bad.write_text('{"settings": {"alpha": "many"}}')
    with pytest.raises(ValueError, match=r"bad\.json: not a valid acceleration settings file"):
        tuned_acceleration("unused", "tca", bad)


def test_the_command_lines_and_the_service_carry_the_file(settings_file):
    assert parse_args(["--output", "out", "--acceleration", str(settings_file)]).acceleration == str(settings_file)
    args = cli_parser().parse_args(["evaluate", "--acceleration", str(settings_file)])
    assert args.acceleration == str(settings_file)
    options = ServiceOptions(acceleration=str(settings_file), input_prefixes=["/in"], output_prefixes=["/out"])
    config = job_config(options, JobRequest(input="/in/v", output="/out/r"), "/in/v", "/out/r")
    assert config.acceleration == str(settings_file)
    arguments = job_arguments(config)
    assert arguments[arguments.index("--acceleration") + 1] == str(settings_file)
