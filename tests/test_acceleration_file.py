"""--acceleration FILE: a settings file chosen for a checkpoint (by `tca-segment tune` or `bench`)
replaces the checkpoint's own, in the job, the CLI and the Serve endpoint alike."""

import pytest

from deploy.jobs import job_arguments, job_config
from deploy.schemas import JobRequest, ServiceOptions
from pipelines.cli import parser as cli_parser
from pipelines.nightly import JobConfig, parse_args
from tca_core.config import AccelerationConfig, write_acceleration_file
from tca_core.model import SWIN_PRESETS, tuned_acceleration


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


# Expedit-Mask2Former's Swin-L setting (docs/tca.md, "Generic defaults"), converted to our distance: the
# temperature 0.01 multiplies a squared distance summed over stage 3's 768 channels, ours the mean.
SWIN_L_EXPEDIT = dict(alpha=10, grid=8, iters=5, radius=3, topk=49, temperature=0.01 * 768)


def _resolved_defaults(config: AccelerationConfig, preset: str) -> dict:
    swin = SWIN_PRESETS[preset]
    resolved = config.resolved(swin["window_size"], swin["depths"]).to_dict()
    return {key: resolved[key] for key in SWIN_L_EXPEDIT}


def test_the_generic_defaults_are_expedits_swin_l_setting_scaled_to_the_backbone():
    assert SWIN_PRESETS["large"]["embed_dim"] * 2 ** (3 - 1) == 768  # Swin-L's stage-3 width, where 0.01 holds
    for method in ("clustering", "tca"):
        generic = AccelerationConfig(method=method)
        assert _resolved_defaults(generic, "large") == pytest.approx(SWIN_L_EXPEDIT)
        assert _resolved_defaults(generic, "base") == pytest.approx(SWIN_L_EXPEDIT)  # the same depth and window
        # Swin-T: stage 3 of depth 6 and window 7: round(6 * 10/18) = 3, round(7 * 8/12) = 5, round(5 * 3/8) = 2.
        assert _resolved_defaults(generic, "tiny") == pytest.approx(dict(SWIN_L_EXPEDIT, alpha=3, grid=5, radius=2))
        assert _resolved_defaults(generic, "small") == pytest.approx(dict(SWIN_L_EXPEDIT, grid=5, radius=2))
    # Set values are kept; the radius follows a set grid.
    explicit = AccelerationConfig(method="tca", alpha=2, grid=2, radius=1, topk=4, temperature=256.0)
    assert _resolved_defaults(explicit, "large") == dict(alpha=2, grid=2, iters=5, radius=1, topk=4, temperature=256.0)
    assert AccelerationConfig(method="tca", grid=2).resolved(12, [2, 2, 18, 2]).radius == 1
    assert AccelerationConfig(method="tca").resolved(7, [1, 1, 1, 1]).alpha == 0  # at most depth - 1


def test_a_checkpoint_without_an_acceleration_file_gets_the_generic_defaults(tmp_path):
    generic = tuned_acceleration(tmp_path, "tca")  # a checkpoint directory without acceleration.json
    assert generic == AccelerationConfig(method="tca")
    assert _resolved_defaults(generic, "large") == pytest.approx(SWIN_L_EXPEDIT)
    assert _resolved_defaults(generic, "tiny") == pytest.approx(dict(SWIN_L_EXPEDIT, alpha=3, grid=5, radius=2))
