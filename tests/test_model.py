"""Loading real checkpoints with from_pretrained, class names from id2label, clear errors."""

import json

import numpy as np
import pytest
import torch
from helpers import smooth_video
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig

from pipelines.nightly import JobConfig
from tca_core.config import EMBEDDED_MODEL, AccelerationConfig
from tca_core.model import TUNED_SETTINGS, load_model, tuned_acceleration
from tca_core.segmenter import Clip, VideoSegmenter


def test_from_pretrained_local_directory(small_model, reference_model, tmp_path):
    reference_model.save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.25] * 3}))
    loaded = VideoSegmenter.from_pretrained(tmp_path, acceleration=AccelerationConfig(method="tca"), task="semantic")
    assert loaded.labels == {0: "disc", 1: "square"}
    assert loaded.mean.flatten().tolist() == [0.5] * 3 and loaded.std.flatten().tolist() == [0.25] * 3

    pixels = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        loaded.acceleration = AccelerationConfig(method="none")
        ours = loaded.model(pixel_values=pixels).masks_queries_logits
        theirs = small_model(pixel_values=pixels).masks_queries_logits
    assert torch.equal(ours, theirs)

    frames = smooth_video(2, 64, 96)
    label_maps = [r.label_map for r in loaded.process([Clip("v", 0, frames)])[0]]
    assert all(m.shape == (64, 96) and set(np.unique(m)) <= {0, 1} for m in label_maps)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load a Mask2Former checkpoint from .*nowhere"):
        load_model(tmp_path / "nowhere")


def test_non_swin_backbone_is_rejected(tmp_path):
    backbone = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 1, 1],
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    config = Mask2FormerConfig(backbone_config=backbone, num_queries=4, decoder_layers=2, encoder_layers=1)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'resnet' backbone; TCA needs a Swin backbone"):
        load_model(tmp_path)


def test_tuned_settings_beside_a_checkpoint(tmp_path):
    assert tuned_acceleration(tmp_path, "tca") == AccelerationConfig(method="tca")  # none there: generic
    (tmp_path / TUNED_SETTINGS).write_text(json.dumps({"settings": {"alpha": 0, "grid": 2, "temperature": 16.0}}))
    tuned = tuned_acceleration(tmp_path, "clustering")
    assert (tuned.method, tuned.alpha, tuned.grid, tuned.temperature) == ("clustering", 0, 2, 16.0)
    assert tuned_acceleration(tmp_path, "none") == AccelerationConfig(method="none")
    (tmp_path / TUNED_SETTINGS).write_text(json.dumps({"settings": {"alpha": -1}}))
    with pytest.raises(ValueError, match="acceleration.json"):
        tuned_acceleration(tmp_path, "tca")


def test_shipped_model_carries_the_benchmarked_default():
    """The job and the endpoint run the point `tca-segment bench` chose (docs/benchmarks.md)."""
    chosen = json.loads((EMBEDDED_MODEL / TUNED_SETTINGS).read_text())
    assert "fidelity_miou >= 0.97" in chosen["chosen_by"]
    assert JobConfig().settings()["acceleration"] == tuned_acceleration(EMBEDDED_MODEL, "tca").to_dict()
    tuned = tuned_acceleration(EMBEDDED_MODEL, "tca").to_dict()
    assert tuned == {**AccelerationConfig(method="tca").to_dict(), **chosen["settings"]}
