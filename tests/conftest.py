import copy

import pytest

from tca_core.model import build_model, swin_mask2former_config

# A small Swin Mask2Former with the proportions TCA targets: a deep third stage, window 7.
SMALL_SWIN = dict(embed_dim=32, depths=[1, 1, 4, 1], num_heads=[1, 2, 4, 8], window_size=7)
SMALL_HEAD = dict(
    num_queries=12,
    decoder_layers=3,
    encoder_layers=1,
    hidden_dim=64,
    feature_size=64,
    mask_feature_size=64,
    dim_feedforward=128,
    encoder_feedforward_dim=128,
)


@pytest.fixture(scope="session")
def small_config():
    return swin_mask2former_config(SMALL_SWIN, id2label={0: "disc", 1: "square"}, **SMALL_HEAD)


@pytest.fixture
def small_model(small_config):
    """A fresh random-weight model (tests may modify it)."""
    return build_model(small_config, seed=0)


@pytest.fixture
def reference_model(small_model):
    """An untouched copy of `small_model`, as `transformers` runs it."""
    return copy.deepcopy(small_model)


@pytest.fixture(scope="session")
def disc_model(small_config):
    """`small_config` trained for a few hundred steps to find the disc of `moving_disc_clip`."""
    from helpers import train_disc_detector

    config = small_config.__class__.from_dict({**small_config.to_dict(), "train_num_points": 1024})
    return train_disc_detector(build_model(config, seed=0))


@pytest.fixture(scope="module")
def local_ray(s3):
    """A local Ray for the module's jobs. Started after the module's `s3` fixture, so that the
    workers inherit the environment it sets (credentials, endpoint)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny_model(small_config, tmp_path_factory):
    """`small_config` with random weights, saved as a checkpoint directory (the jobs load it by path)."""
    path = tmp_path_factory.mktemp("model")
    build_model(small_config, seed=0).save_pretrained(path)
    return str(path)
