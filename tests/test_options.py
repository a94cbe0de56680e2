"""One declaration per knob (pipelines/options.py): the job's settings, its command line, the CLI's
model options and the Serve endpoint's options all come from it."""

import dataclasses

import pytest

from pipelines.cli import parser as cli_parser
from pipelines.nightly import JobConfig, parse_args
from pipelines.options import JOB_KNOBS, MODEL_KNOBS
from tca_core.config import METHODS, TASKS


def test_every_job_setting_is_a_declared_knob_with_its_default():
    fields = {spec.name: spec for spec in dataclasses.fields(JobConfig)}
    knobs = {**JOB_KNOBS, **MODEL_KNOBS}
    assert set(fields) == set(knobs)
    config = JobConfig()
    for name, knob in knobs.items():
        assert fields[name].metadata["knob"] is knob
        assert getattr(config, name) == knob.default, name


def test_the_jobs_command_line_offers_every_knob_with_its_default():
    config = parse_args(["--output", "out/x"])
    assert dataclasses.replace(config, output="out/nightly") == JobConfig()
    assert parse_args(["--output", "o", "--max-actor-restarts", "0", "--method", "none"]).max_actor_restarts == 0


def test_the_cli_model_options_are_the_jobs():
    args = cli_parser().parse_args(["evaluate"])
    assert (args.model, args.method, args.clip_frames) == (JobConfig().model, "tca", JobConfig().clip_frames)
    assert MODEL_KNOBS["method"].choices == METHODS and MODEL_KNOBS["task"].choices == TASKS


@pytest.mark.parametrize(
    "settings, reason",
    [
        (dict(method="fast"), "method must be one of none, clustering, tca, got 'fast'"),
        (dict(chunk_frames=0), "chunk_frames must be >= 1, got 0"),
        (dict(score_threshold=1.5), "score_threshold must be <= 1.0, got 1.5"),
        (dict(overlap=-1), "overlap must be >= 0, got -1"),
        (dict(run_id="../elsewhere"), "run_id must match"),
    ],
)
def test_an_invalid_setting_is_refused_naming_the_field_and_the_reason(settings, reason):
    with pytest.raises(ValueError, match=reason):
        JobConfig(**settings)


def test_the_command_line_refuses_an_invalid_setting_with_its_reason(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--output", "o", "--chunk-frames", "0"])
    assert "chunk_frames must be >= 1" in capsys.readouterr().err


def test_the_serve_endpoint_takes_the_model_options_from_the_same_declarations():
    from pydantic import ValidationError

    from deploy.schemas import ServiceOptions

    options = ServiceOptions()
    for name, knob in MODEL_KNOBS.items():
        assert getattr(options, name) == knob.default, name
        assert ServiceOptions.model_fields[name].description == knob.help
    with pytest.raises(ValidationError, match="short_side"):
        ServiceOptions(short_side=MODEL_KNOBS["short_side"].minimum - 1)
    with pytest.raises(ValidationError, match="method"):
        ServiceOptions(method="fast")
