"""Building and loading Swin Mask2Former models from `transformers`."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from .config import AccelerationConfig
from .swin import AcceleratedSwinBackbone

# The model trained here on generated videos and shipped in the package (docs/model_card.md).
EMBEDDED_MODEL = Path(__file__).parent / "weights" / "swin-shapes"

# Beside a checkpoint: the acceleration settings chosen for it from `tca-segment bench` (docs/benchmarks.md).
TUNED_SETTINGS = "acceleration.json"

# Backbone proportions of the public Swin variants (embed dim, depths, heads, window).
SWIN_PRESETS = {
    "tiny": dict(embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "small": dict(embed_dim=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24], window_size=7),
    "base": dict(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12),
    "large": dict(embed_dim=192, depths=[2, 2, 18, 2], num_heads=[6, 12, 24, 48], window_size=12),
}


def swin_mask2former_config(
    preset: str | dict = "tiny", id2label: dict[int, str] | None = None, **mask2former_kwargs
) -> Mask2FormerConfig:
    """A Mask2Former config with a Swin backbone: a preset name from SWIN_PRESETS or explicit Swin kwargs."""
    swin_kwargs = SWIN_PRESETS[preset] if isinstance(preset, str) else preset
    backbone = SwinConfig(
        image_size=224, out_features=["stage1", "stage2", "stage3", "stage4"], drop_path_rate=0.0, **swin_kwargs
    )
    id2label = id2label or {0: "object"}
    return Mask2FormerConfig(
        backbone_config=backbone,
        id2label={int(k): v for k, v in id2label.items()},
        label2id={v: int(k) for k, v in id2label.items()},
        **mask2former_kwargs,
    )


def build_model(config: Mask2FormerConfig, seed: int | None = 0) -> Mask2FormerForUniversalSegmentation:
    """A randomly initialised model (tests, cost measurements, the start of training)."""
    if seed is not None:
        torch.manual_seed(seed)
    return Mask2FormerForUniversalSegmentation(config).eval()


def load_model(source: str | Path, device: str | torch.device = "cpu", dtype=torch.float32):
    """`from_pretrained` on a local directory or a hub id; the backbone must be Swin."""
    try:
        model = Mask2FormerForUniversalSegmentation.from_pretrained(str(source), dtype=dtype)
    except (OSError, ValueError) as error:
        raise ValueError(f"cannot load a Mask2Former checkpoint from {source!r}: {error}") from error
    backbone_type = getattr(model.config.backbone_config, "model_type", None)
    if backbone_type != "swin":
        raise ValueError(f"{source!r} has a {backbone_type!r} backbone; TCA needs a Swin backbone")
    return model.to(device).eval()


def tuned_acceleration(source: str | Path, method: str) -> AccelerationConfig:
    """`method` with the settings tuned for the checkpoint at `source` (its acceleration.json), or with
    AccelerationConfig's generic defaults where the checkpoint has none (e.g. a hub id)."""
    path = Path(source) / TUNED_SETTINGS
    if method == "none" or not path.is_file():
        return AccelerationConfig(method=method)
    try:
        return AccelerationConfig(**json.loads(path.read_text())["settings"], method=method)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a valid acceleration settings file: {error}") from error


def accelerate(model: Mask2FormerForUniversalSegmentation, acceleration: AccelerationConfig) -> AcceleratedSwinBackbone:
    """Put an `AcceleratedSwinBackbone` in the model (once) and set its method; returns the backbone."""
    pixel_level = model.model.pixel_level_module
    if not isinstance(pixel_level.encoder, AcceleratedSwinBackbone):
        pixel_level.encoder = AcceleratedSwinBackbone(pixel_level.encoder, acceleration)
    else:
        pixel_level.encoder.acceleration = acceleration
    return pixel_level.encoder
