"""Settings of the acceleration methods (see ../shared/design/TCA.md)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

METHODS = ("none", "clustering", "tca")
RECONSTRUCTIONS = ("mix", "residual")


@dataclass(frozen=True)
class AccelerationConfig:
    """How the Swin backbone is accelerated.

    method: "none" (unmodified model), "clustering" (per-frame window token clustering) or "tca".
    stage: 1-based Swin stage that is clustered (normally 3, the deepest).
    alpha: 0-based block of that stage where clustering happens; blocks alpha..end run clustered.
        None: half the stage's depth (resolved against the model by `resolved`).
    grid: cluster grid h' per window (h' x h' cluster tokens replace w x w tokens).
        None: two thirds of the window size, rounded (resolved against the model).
    iters: soft k-means rounds of per-frame clustering.
    temperature: sharpness of affinities, applied to the per-channel mean squared distance.
    radius: a token is compared only with centers within this many grid cells of its own cell.
    topk: clusters that contribute to each reconstructed token.
    reconstruction: how the stage output returns to full resolution: "mix" (each token is a mix of
        its processed clusters, TCA.md step 4) or "residual" (each token keeps its own input and adds
        its clusters' update). None: "residual" for TCA, "mix" for per-frame clustering.
    tau: TCA temporal threshold; tokens with cos(x[t], x[t-1]) >= tau seed the clusters with their
        assignment in the previous frame.
    tca_iters: k-means rounds of TCA on a continued frame (from the seeded clusters).
    cut_threshold: a frame whose mean temporal cosine is below this is a scene cut (memory reset).
    """

    method: str = "none"
    stage: int = 3
    alpha: int | None = None
    grid: int | None = None
    iters: int = 5
    temperature: float = 1.0
    radius: int = 1
    topk: int = 4
    reconstruction: str | None = None
    tau: float = 0.9
    tca_iters: int = 3
    cut_threshold: float = 0.5

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        checks = {
            "stage": self.stage >= 1,
            "alpha": self.alpha is None or self.alpha >= 0,
            "grid": self.grid is None or self.grid >= 1,
            "iters": self.iters >= 1,
            "temperature": self.temperature > 0,
            "radius": self.radius >= 0,
            "topk": self.topk >= 1,
            "reconstruction": self.reconstruction in (None, *RECONSTRUCTIONS),
            "tau": -1.0 <= self.tau <= 1.0,
            "tca_iters": self.tca_iters >= 1,
            "cut_threshold": -1.0 <= self.cut_threshold <= 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid acceleration setting(s) {bad}: {self}")

    @property
    def accelerated(self) -> bool:
        return self.method != "none"

    def resolved(self, window_size: int, depths: list[int]) -> AccelerationConfig:
        """This config with defaults filled in and checked against a Swin backbone's shape."""
        if self.stage > len(depths):
            raise ValueError(f"stage={self.stage} but the backbone has {len(depths)} stages")
        depth = depths[self.stage - 1]
        alpha = depth // 2 if self.alpha is None else self.alpha
        grid = max(1, round(window_size * 2 / 3)) if self.grid is None else self.grid
        if alpha >= depth:
            raise ValueError(f"alpha={alpha} must be below the depth {depth} of stage {self.stage}")
        if grid > window_size:
            raise ValueError(f"grid={grid} must not exceed the window size {window_size}")
        reconstruction = self.reconstruction or ("residual" if self.method == "tca" else "mix")
        return replace(self, alpha=alpha, grid=grid, reconstruction=reconstruction)

    def to_dict(self) -> dict:
        return asdict(self)
