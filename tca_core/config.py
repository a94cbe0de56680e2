"""Settings of the acceleration methods (see ../shared/design/TCA.md)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path

METHODS = ("none", "clustering", "tca")
TASKS = ("instance", "semantic", "both")  # what VideoSegmenter segments: tracked instances, label maps, or both

# Beside a checkpoint: its Hugging Face image processor config (size and normalisation of its inputs).
PREPROCESSOR_CONFIG = "preprocessor_config.json"

# The model trained here on generated videos and shipped in the package (docs/model_card.md).
EMBEDDED_MODEL = Path(__file__).parent / "weights" / "swin-shapes"
RECONSTRUCTIONS = ("mix", "residual")

# The generic defaults (docs/tca.md, "Generic defaults") are Expedit-Mask2Former's setting for Swin-L on
# YouTube-VIS 2021, the only clustering setting validated on real Swin checkpoints, scaled to the backbone:
# clustering before block 10 of stage 3's 18 blocks (blocks 10..17 on the clusters, reconstruction at
# the end of the stage), window 12 -> 8 x 8 clusters, 5 k-means rounds over the 7 x 7 neighbourhood of
# centers (radius 3), temperature 0.01 on the squared distance summed over stage 3's 768 channels,
# reconstruction from the top 49 clusters.
EXPEDIT_ALPHA, EXPEDIT_DEPTH = 10, 18
EXPEDIT_GRID, EXPEDIT_WINDOW = 8, 12
EXPEDIT_RADIUS = 3
EXPEDIT_TEMPERATURE, EXPEDIT_CHANNELS = 0.01, 768  # on the summed squared distance, at Swin-L's stage-3 width

# Window reuse computes a frame whole when at least this share of the first block's windows changed
# (a scene cut): gathering would then cost more than it saves (docs/tca.md, "Reuse").
REUSE_CUT_SHARE = 0.8
# ... and when the camera moved since the frame before: the global shift and zoom that best carry
# that frame onto the new one (fitted on the patch means, `reuse.camera_moved`) leave less than
# CAMERA_MOTION_GAIN of the change the unmoved frame leaves. A pan or a zoom changes every window a
# little, which the windows' own tests would let through (docs/benchmarks.md, "Reuse").
CAMERA_MOTION_GAIN = 0.97
# Reuse compares frames by the mean colour of each patch of this many pixels a side (Swin's patch
# size, so that a patch is one token of the first stage): averaging over a patch cancels sensor noise,
# a moving edge or a change of light still moves the patch's mean (docs/tca.md, "Reuse").
REUSE_PATCH = 4
# The settings of reuse (they apply to every method, "none" included).
REUSE_SETTINGS = ("window_reuse", "frame_reuse", "pixel_change", "refresh")


@dataclass(frozen=True)
class AccelerationConfig:
    """How the Swin backbone is accelerated: ../shared/design/TCA.md specifies the methods and
    docs/tca.md says how tca_core realises them. Construction checks each setting's range below;
    `resolved` fills in the None defaults and checks stage, alpha and grid against the backbone.

    method: "none" (the unmodified model; the other settings are then unused), "clustering"
        (per-frame window token clustering) or "tca" (clustering seeded from the previous frame's
        cluster memory). One of METHODS.
    stage: the 1-based Swin stage that is clustered: 1 .. the backbone's number of stages (4 for
        the public Swin variants); normally 3, the deepest.
    alpha: the 0-based block of that stage where clustering happens: blocks 0 .. alpha-1 run on
        every token, blocks alpha .. end on the clusters, reconstructed at the end of the stage.
        0 .. the stage's depth - 1; None: Expedit's 10 of 18 blocks scaled to the stage's depth,
        round(depth * 10 / 18), at most depth - 1 (10 for Swin-S/B/L, 3 for Swin-T). Smaller is
        cheaper and less faithful.
    grid: h', the side of each window's cluster grid in cluster tokens: h' x h' cluster tokens
        replace the window's w x w tokens. 1 .. w, the window size (7 for Swin-T/S, 12 for Swin-B/L);
        None: Expedit's 8 of 12 scaled to the window, round(w * 8 / 12), at least 1 (8 for window 12,
        5 for window 7). Smaller is cheaper and less faithful.
    iters: rounds of local soft k-means of per-frame clustering (also what a TCA reset runs); >= 1;
        default 5, Expedit's.
    temperature: the sharpness of the affinities and of the reconstruction weights,
        softmax(-temperature * d), d being the per-channel mean squared distance between a token and
        a center (so one value suits every stage width); unitless, > 0. Default 7.68: Expedit's 0.01
        on the summed squared distance, times the 768 channels it sums at Swin-L's stage 3. A low one
        pulls the centers together (docs/tca.md, "Temperature and merging centers"); the shipped
        model uses 256.
    radius: a token is compared only with the centers within this many grid cells of its own cell,
        in rows and in columns; in cells, >= 0 (0: its own cell's center only). None: Expedit's 3
        cells of its 8 x 8 grid (a 7 x 7 neighbourhood) scaled to h', round(h' * 3 / 8) with halves
        rounded up (3 for h' 8, 2 for h' 5).
    topk: the clusters that contribute to each reconstructed token (its nearest allowed ones); >= 1,
        a value above the allowed centers counting as all of them. Default 49, Expedit's: every
        allowed center when the radius is at most 3 ((2 * 3 + 1)^2 = 49).
    reconstruction: how the stage output returns to full resolution: "mix" (each token is a mix of
        its processed clusters, TCA.md step 4) or "residual" (each token keeps its own input and adds
        its clusters' update). One of RECONSTRUCTIONS; None: "residual" for TCA, "mix" for
        per-frame clustering.
    tau: TCA's temporal threshold, a cosine in -1 .. 1: tokens with cos(x[t], x[t-1]) >= tau (same
        window, same position) seed the clusters with their soft assignment of the previous frame;
        a higher tau seeds from fewer tokens. Used by "tca" only.
    tca_iters: rounds of local soft k-means of TCA on a continued frame, from the seeded clusters;
        >= 1. Used by "tca" only.
    cut_threshold: a cosine in -1 .. 1: a frame whose mean temporal cosine over its real (not
        padding) tokens is below this is a scene cut, and TCA resets its memory (per-frame
        clustering for that frame). Used by "tca" only.
    window_reuse: reuse of what did not change, inside the backbone (with any method): in every
        Swin block, a window whose input changed by less than this since the last time the block
        computed it (root mean square of the change over its tokens, relative to that input's) takes
        the block's output from then; the other windows are computed, gathered into one batch. The
        first block decides on the pixels instead (`pixel_change`). > 0; None: off. Frames are
        computed whole on a reset (start, gap, size change), when the camera moved
        (CAMERA_MOTION_GAIN), when at least REUSE_CUT_SHARE of the first block's windows changed,
        and every `refresh` frames.
    frame_reuse: whether a frame none of whose patches changed (`pixel_change`) since the last frame
        the model ran on takes that frame's results (masks, ids, label map) without running the model.
        Works with any method.
    pixel_change: how much the mean colour of a REUSE_PATCH-pixel patch of the processed frame (any
        channel, in 0..1 intensity) must change to count as a change, for frame reuse and for window
        reuse's first block. > 0.
    refresh: with window reuse, a frame is computed whole at least every this many frames the
        backbone runs on, so that reuse's approximations never accumulate unbounded. >= 1.
    """

    method: str = "none"
    stage: int = 3
    alpha: int | None = None
    grid: int | None = None
    iters: int = 5
    temperature: float = EXPEDIT_TEMPERATURE * EXPEDIT_CHANNELS
    radius: int | None = None
    topk: int = 49
    reconstruction: str | None = None
    tau: float = 0.9
    tca_iters: int = 3
    cut_threshold: float = 0.5
    window_reuse: float | None = None
    frame_reuse: bool = False
    pixel_change: float = 0.05
    refresh: int = 16

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        checks = {
            "stage": self.stage >= 1,
            "alpha": self.alpha is None or self.alpha >= 0,
            "grid": self.grid is None or self.grid >= 1,
            "iters": self.iters >= 1,
            "temperature": self.temperature > 0,
            "radius": self.radius is None or self.radius >= 0,
            "topk": self.topk >= 1,
            "reconstruction": self.reconstruction in (None, *RECONSTRUCTIONS),
            "tau": -1.0 <= self.tau <= 1.0,
            "tca_iters": self.tca_iters >= 1,
            "cut_threshold": -1.0 <= self.cut_threshold <= 1.0,
            "window_reuse": self.window_reuse is None or self.window_reuse > 0,
            "frame_reuse": isinstance(self.frame_reuse, bool),
            "pixel_change": self.pixel_change > 0,
            "refresh": self.refresh >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid acceleration setting(s) {bad}: {self}")

    @property
    def accelerated(self) -> bool:
        """Whether the backbone clusters tokens (method "clustering" or "tca")."""
        return self.method != "none"

    @property
    def reusing(self) -> bool:
        """Whether windows or frames are reused (`window_reuse`, `frame_reuse`)."""
        return self.window_reuse is not None or self.frame_reuse

    def resolved(self, window_size: int, depths: list[int]) -> AccelerationConfig:
        """This config with defaults filled in and checked against a Swin backbone's shape."""
        if self.stage > len(depths):
            raise ValueError(f"stage={self.stage} but the backbone has {len(depths)} stages")
        depth = depths[self.stage - 1]
        # None: Expedit's setting scaled to this stage's depth and window (EXPEDIT_* above).
        alpha = min(depth - 1, round(depth * EXPEDIT_ALPHA / EXPEDIT_DEPTH)) if self.alpha is None else self.alpha
        grid = max(1, round(window_size * EXPEDIT_GRID / EXPEDIT_WINDOW)) if self.grid is None else self.grid
        radius = int(grid * EXPEDIT_RADIUS / EXPEDIT_GRID + 0.5) if self.radius is None else self.radius
        if alpha >= depth:
            raise ValueError(f"alpha={alpha} must be below the depth {depth} of stage {self.stage}")
        if grid > window_size:
            raise ValueError(f"grid={grid} must not exceed the window size {window_size}")
        reconstruction = self.reconstruction or ("residual" if self.method == "tca" else "mix")
        return replace(self, alpha=alpha, grid=grid, radius=radius, reconstruction=reconstruction)

    def to_dict(self) -> dict:
        return asdict(self)


# Beside a checkpoint: the acceleration settings chosen for it by `tca-segment bench` (docs/benchmarks.md).
TUNED_SETTINGS = "acceleration.json"
# What an acceleration file leaves out: the method is the job's choice, and the reconstruction follows it.
_NOT_TUNED = ("method", "reconstruction")


def read_acceleration_file(path: Path, method: str) -> AccelerationConfig:
    """`method` with the settings of the acceleration file at `path`; ValueError (naming the file) where
    it is not one."""
    try:
        return AccelerationConfig(**json.loads(Path(path).read_text())["settings"], method=method)
    except OSError as error:
        raise ValueError(f"{path}: cannot read the acceleration settings file: {error.strerror}") from error
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a valid acceleration settings file: {error}") from error


def write_acceleration_file(path: Path, config: AccelerationConfig, chosen_by: str) -> None:
    """Write `config`'s settings as an acceleration file at `path`, all but the method and the
    reconstruction (`_NOT_TUNED`); `chosen_by` says how they were chosen (a line for readers)."""
    settings = {k: v for k, v in config.to_dict().items() if k not in _NOT_TUNED}
    Path(path).write_text(json.dumps(dict(chosen_by=chosen_by, settings=settings), indent=2) + "\n")
