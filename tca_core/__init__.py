"""Video segmentation with Temporal Cluster Assignment (TCA) on a Swin Mask2Former.

    from tca_core import AccelerationConfig, Clip, VideoSegmenter

The names below load on first use (PEP 562), so that importing a light module of the package
(`tca_core.config`, `tca_core.rle`, `tca_core.synthetic`) does not import torch or transformers.
"""

from __future__ import annotations

import importlib

# The public API: each name and the module that defines it.
_SOURCES = {
    "AccelerationConfig": "config",
    "Clip": "segmenter",
    "EMBEDDED_MODEL": "config",
    "FrameResult": "segmenter",
    "FrameStats": "swin",
    "Instance": "segmenter",
    "StreamLost": "segmenter",
    "StreamStart": "segmenter",
    "VideoSegmenter": "segmenter",
    "tuned_acceleration": "model",
}

__all__ = sorted(_SOURCES)


def __getattr__(name: str):
    if name not in _SOURCES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_SOURCES[name]}", __name__), name)
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
