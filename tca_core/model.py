"""Building and loading Swin Mask2Former models from `transformers`."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from transformers import AutoImageProcessor, Mask2FormerConfig, Mask2FormerForUniversalSegmentation, SwinConfig

from .config import PREPROCESSOR_CONFIG, REUSE_SETTINGS, TUNED_SETTINGS, AccelerationConfig, read_acceleration_file
from .swin import AcceleratedSwinBackbone

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

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


def tuned_acceleration(source: str | Path, method: str, file: str | Path | None = None) -> AccelerationConfig:
    """`method` with the settings of the acceleration file `file` when given, else those tuned for the
    checkpoint at `source` (its acceleration.json), else AccelerationConfig's generic defaults (e.g. a
    hub id). Method "none" without a file is the unmodified model; with one, it takes the file's
    reuse settings only (`REUSE_SETTINGS`: window and frame reuse run with any method). A given file
    that is missing or invalid is a ValueError naming it."""
    if method == "none":
        if file is None:
            return AccelerationConfig(method=method)
        chosen = read_acceleration_file(Path(file), method)
        return AccelerationConfig(method=method, **{name: getattr(chosen, name) for name in REUSE_SETTINGS})
    if file is not None:
        return read_acceleration_file(Path(file), method)
    path = Path(source) / TUNED_SETTINGS
    if not path.is_file():
        return AccelerationConfig(method=method)
    return read_acceleration_file(path, method)


def accelerate(model: Mask2FormerForUniversalSegmentation, acceleration: AccelerationConfig) -> AcceleratedSwinBackbone:
    """Put an `AcceleratedSwinBackbone` in the model (once) and set its method; returns the backbone."""
    pixel_level = model.model.pixel_level_module
    if not isinstance(pixel_level.encoder, AcceleratedSwinBackbone):
        pixel_level.encoder = AcceleratedSwinBackbone(pixel_level.encoder, acceleration)
    else:
        pixel_level.encoder.acceleration = acceleration
    return pixel_level.encoder


# --- image processing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageProcessing:
    """How frames are prepared for a model, in the conventions of Hugging Face's Mask2FormerImageProcessor.

    Size, one of: nothing (frames run at their native size); `shortest_edge` (the short side becomes
    this, aspect kept), with `longest_edge` capping the long side (then the short side is smaller);
    or `height` and `width` (a fixed size, aspect not kept, as HF resizes to {"height", "width"}).
    `size_divisor` > 0 then rounds a resized height and width up to its multiples (HF's default is 32).
    Normalisation: (pixel / 255 - image_mean) / image_std.
    """

    shortest_edge: int | None = None
    longest_edge: int | None = None
    height: int | None = None
    width: int | None = None
    size_divisor: int = 0
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        object.__setattr__(self, "image_mean", tuple(float(v) for v in self.image_mean))
        object.__setattr__(self, "image_std", tuple(float(v) for v in self.image_std))
        sizes = dict(
            shortest_edge=self.shortest_edge, longest_edge=self.longest_edge, height=self.height, width=self.width
        )
        for name, value in sizes.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive int or None, got {value!r}")
        fixed = self.height is not None or self.width is not None
        if fixed and (self.height is None or self.width is None or self.shortest_edge or self.longest_edge):
            raise ValueError(f"a fixed size needs height and width and nothing else, got {sizes}")
        if self.longest_edge is not None and self.shortest_edge is None:
            raise ValueError(f"longest_edge needs a shortest_edge, got {sizes}")
        if not isinstance(self.size_divisor, int) or self.size_divisor < 0:
            raise ValueError(f"size_divisor must be an int >= 0, got {self.size_divisor!r}")
        if len(self.image_mean) != 3 or len(self.image_std) != 3 or min(self.image_std) <= 0:
            raise ValueError(f"image_mean and image_std need 3 values, std > 0: {self.image_mean}, {self.image_std}")

    @property
    def resizes(self) -> bool:
        return self.shortest_edge is not None or self.height is not None

    def size(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) a (height, width) frame is resized to, as HF's Mask2FormerImageProcessor does."""
        if not self.resizes:
            return height, width
        if self.height is not None:
            size = (self.height, self.width)
        else:
            size = _size_with_aspect_ratio(height, width, self.shortest_edge, self.longest_edge)
        if self.size_divisor:
            size = tuple(math.ceil(side / self.size_divisor) * self.size_divisor for side in size)
        return max(1, size[0]), max(1, size[1])

    def with_short_side(self, short_side: int | None) -> ImageProcessing:
        """The same normalisation at another size: short side `short_side` without cap, or native (None)."""
        return replace(self, shortest_edge=short_side, longest_edge=None, height=None, width=None, size_divisor=0)


def _size_with_aspect_ratio(height: int, width: int, short: int, cap: int | None) -> tuple[int, int]:
    """`transformers.image_transforms.get_size_with_aspect_ratio`: the short side becomes `short` unless
    the long side would then exceed `cap`; the other side follows the aspect ratio, rounded down."""
    low, high = min(height, width), max(height, width)
    raw = None
    if cap is not None and high / low * short > cap:
        raw = cap * low / high
        short = int(round(raw))
    if low == short:
        return height, width
    ratio = raw if raw is not None else short
    if width < height:
        return int(ratio * height / width), short
    return short, int(ratio * width / height)


def image_processing(source: str | Path) -> ImageProcessing:
    """The size and normalisation of the checkpoint at `source` (a local directory or a hub id), read
    with `AutoImageProcessor.from_pretrained` from its preprocessor_config.json.

    A checkpoint without one (a local directory lacking the file; a hub repository where it cannot be
    fetched) runs at native size with ImageNet's mean and std. A config that does not load, or whose
    size is not one of ImageProcessing's, is a ValueError naming the path."""
    local = Path(source).is_dir()
    where = str(Path(source) / PREPROCESSOR_CONFIG) if local else repr(str(source))
    if local and not (Path(source) / PREPROCESSOR_CONFIG).is_file():
        return ImageProcessing()
    try:
        processor = AutoImageProcessor.from_pretrained(str(source))
    except OSError as error:
        if not local:  # no preprocessor_config.json in the repository (or not fetchable)
            return ImageProcessing()
        raise ValueError(f"{where}: cannot load the image processor config: {error}") from error
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{where}: cannot load the image processor config: {error}") from error
    try:
        return _from_processor(processor)
    except (ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{where}: unsupported image processor config: {error}") from error


def _from_processor(processor) -> ImageProcessing:
    """ImageProcessing from a loaded HF image processor. Its pixels are rescale_factor x (0..255) when
    do_rescale, else 0..255; mean and std are restated for pixels in 0..1."""
    scale = 255.0 * (processor.rescale_factor if getattr(processor, "do_rescale", True) else 1.0)
    if getattr(processor, "do_normalize", True):
        mean, std = _triple(processor.image_mean), _triple(processor.image_std)
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = tuple(m / scale for m in mean), tuple(s / scale for s in std)
    if not getattr(processor, "do_resize", True):
        return ImageProcessing(image_mean=mean, image_std=std)
    size = {key: value for key, value in dict(processor.size or {}).items() if value is not None}
    keys = set(size)
    if keys not in ({"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"height", "width"}):
        raise ValueError(f"size {size}: supported are shortest_edge (and longest_edge) or height and width")
    divisor = getattr(processor, "size_divisor", 0) or 0
    return ImageProcessing(**size, size_divisor=divisor, image_mean=mean, image_std=std)


def _triple(values) -> tuple[float, float, float]:
    values = [values] * 3 if isinstance(values, int | float) else list(values)
    return tuple(float(v) for v in values)


def preprocessor_config(processing: ImageProcessing, num_labels: int) -> dict:
    """`processing` as a Mask2FormerImageProcessor preprocessor_config.json (the inverse of `image_processing`)."""
    config = dict(image_processor_type="Mask2FormerImageProcessor", do_resize=processing.resizes)
    if processing.height is not None:
        config["size"] = dict(height=processing.height, width=processing.width)
    elif processing.shortest_edge is not None:
        size = dict(shortest_edge=processing.shortest_edge, longest_edge=processing.longest_edge)
        config["size"] = {key: value for key, value in size.items() if value is not None}
    return dict(
        config,
        size_divisor=processing.size_divisor,
        resample=2,  # bilinear
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(processing.image_mean),
        image_std=list(processing.image_std),
        do_reduce_labels=False,
        ignore_index=255,
        num_labels=num_labels,
    )
