"""Window token clustering, TCA's temporal assignment, and reconstruction (TCA.md).

All functions work on window-partitioned tokens `x` of shape (B, nW, N, C): B frames, nW windows per
frame, N = w*w tokens per window. Clusters have shape (B, nW, M, C) with M = h'*h'. The arithmetic runs
in float32 whatever the model's dtype, so half precision only affects the transformer blocks.
Distances are per-channel mean squared differences, so `temperature` does not depend on the width.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

_MASKED = -1e9  # finite stand-in for -inf: rows with nothing allowed stay NaN-free
SAME_FIT = 1 + 1e-5  # quantisation errors within this ratio are a tie (float rounding)
# A window in which any token changed (rho < tau) keeps the clusters seeded from the memory only where
# they quantise its tokens this much better than per-frame clustering's (docs/tca.md, "TCA").
CHANGED_MARGIN = 0.1


@dataclass
class WindowGeometry:
    """Which tokens and centers of each window exist and which centers a token may join."""

    window: int
    grid: int
    neighbors: torch.Tensor  # (N, M) bool: center within `radius` cells of the token's cell
    token_valid: torch.Tensor  # (nW, N) bool: False for padding
    center_valid: torch.Tensor  # (nW, M) bool: the center's pooling cell holds a real token

    @property
    def allowed(self) -> torch.Tensor:
        """(nW, N, M) bool: token i may be assigned to center j."""
        return self.neighbors[None] & self.center_valid[:, None, :] & self.token_valid[:, :, None]


def window_geometry(token_valid: torch.Tensor, grid: int, radius: int) -> WindowGeometry:
    """Geometry for windows whose valid tokens are `token_valid` (nW, w, w)."""
    window = token_valid.shape[-1]
    device = token_valid.device
    cell = torch.arange(window, device=device) * grid // window  # adaptive-pool cell of each row/col
    token_row = cell[:, None].expand(window, window).reshape(-1)
    token_col = cell[None, :].expand(window, window).reshape(-1)
    center = torch.arange(grid, device=device)
    center_row = center[:, None].expand(grid, grid).reshape(-1)
    center_col = center[None, :].expand(grid, grid).reshape(-1)
    neighbors = ((token_row[:, None] - center_row[None]).abs() <= radius) & (
        (token_col[:, None] - center_col[None]).abs() <= radius
    )
    occupancy = F.adaptive_avg_pool2d(token_valid[:, None].float(), grid)
    return WindowGeometry(
        window=window,
        grid=grid,
        neighbors=neighbors,
        token_valid=token_valid.flatten(1),
        center_valid=occupancy.flatten(1) > 0,
    )


def initial_centers(x: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
    """Masked adaptive average pooling of each window's tokens onto the h' x h' grid."""
    batch, num_windows, _, channels = x.shape
    w, g = geometry.window, geometry.grid
    valid = geometry.token_valid.to(x.dtype)[None, :, :, None]
    grid_x = (x * valid).reshape(batch * num_windows, w, w, channels).permute(0, 3, 1, 2)
    pooled = F.adaptive_avg_pool2d(grid_x, g)
    occupancy = F.adaptive_avg_pool2d(geometry.token_valid.to(x.dtype).reshape(num_windows, 1, w, w), g)
    pooled = pooled.reshape(batch, num_windows, channels, g * g).transpose(2, 3)
    return pooled / occupancy.reshape(1, num_windows, g * g, 1).clamp_min(1e-6)


def squared_distance(x: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """(B, nW, N, M) per-channel mean squared distance, as matmuls (counted by the FLOP counter)."""
    cross = torch.einsum("bwnc,bwmc->bwnm", x, centers)
    x_sq = (x * x).sum(-1, keepdim=True)
    c_sq = (centers * centers).sum(-1)[:, :, None, :]
    return (x_sq + c_sq - 2 * cross).clamp_min(0) / x.shape[-1]


def soft_assignment(x: torch.Tensor, centers: torch.Tensor, geometry: WindowGeometry, temperature: float):
    """Affinities (B, nW, N, M): softmax over the allowed centers of -distance * temperature."""
    logits = -temperature * squared_distance(x, centers)
    logits = logits.masked_fill(~geometry.allowed[None], _MASKED)
    return logits.softmax(-1) * geometry.token_valid[None, :, :, None]


def update_centers(affinity: torch.Tensor, x: torch.Tensor, fallback: torch.Tensor) -> torch.Tensor:
    """Affinity-weighted means of the tokens; centers nobody joined keep `fallback`."""
    weight = affinity.sum(2)[..., None]  # (B, nW, M, 1)
    means = torch.einsum("bwnm,bwnc->bwmc", affinity, x) / weight.clamp_min(1e-6)
    return torch.where(weight > 1e-6, means, fallback)


def local_kmeans(x: torch.Tensor, centers: torch.Tensor, geometry: WindowGeometry, iters: int, temperature: float):
    """`iters` rounds of local soft k-means from `centers`. Returns (centers, affinity)."""
    for _ in range(iters):
        affinity = soft_assignment(x, centers, geometry, temperature)
        centers = update_centers(affinity, x, centers)
    return centers, affinity


def per_frame_clustering(x: torch.Tensor, geometry: WindowGeometry, iters: int, temperature: float):
    """Local soft k-means of every frame independently, from grid pooling. Returns (centers, affinity)."""
    return local_kmeans(x, initial_centers(x, geometry), geometry, iters, temperature)


def temporal_cosine(x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """rho (B, nW, N): cosine of each token with the same token of the previous frame."""
    return F.cosine_similarity(x, previous, dim=-1, eps=1e-6)


def quantisation_error(x: torch.Tensor, centers: torch.Tensor, geometry: WindowGeometry) -> torch.Tensor:
    """(B, nW): mean over each window's real tokens of the distance to the nearest allowed center."""
    distance = squared_distance(x, centers).masked_fill(~geometry.allowed[None], float("inf"))
    nearest = distance.min(-1).values.masked_fill(~geometry.token_valid[None], 0.0)
    return nearest.sum(-1) / geometry.token_valid.sum(-1).clamp_min(1)


def temporal_clustering(
    x: torch.Tensor,
    previous_affinity: torch.Tensor,
    stable: torch.Tensor,
    geometry: WindowGeometry,
    iters: int,
    temperature: float,
    per_frame: tuple[torch.Tensor, torch.Tensor],
):
    """TCA for one frame: clusters seeded by the previous frame's assignment of the `stable` tokens.

    Centers start as the pooled current tokens under the assignment the stable tokens (B, nW, N) had
    in the previous frame (grid pooling where a center kept no stable token), so the clusters carry
    over from frame to frame; then `iters` soft k-means rounds refine them with every token. Frame
    after frame this continues one k-means run instead of restarting it from the grid (docs/tca.md).
    `per_frame` is (centers, affinity) of per-frame clustering of the same frame: a window where every
    token is stable keeps its seeded clusters unless those quantise its tokens worse; one where some
    token changed keeps them only where they quantise CHANGED_MARGIN better. So where the previous
    frame does not help (content that moved in, a camera that moves, clusters of one or two tokens)
    TCA falls back to per-frame clustering.
    Returns (centers, affinity, seeded) with seeded (B, nW) True where the temporal clusters were kept.
    """
    kept = previous_affinity * stable[..., None]
    start = update_centers(kept, x, initial_centers(x, geometry))
    centers, affinity = local_kmeans(x, start, geometry, iters, temperature)
    frame_centers, frame_affinity = per_frame
    # Where nothing changed, ties keep the memory, so a static scene keeps its clusters; where something
    # did, the memory's clusters must fit clearly better (CHANGED_MARGIN).
    changed = ((~stable) & geometry.token_valid[None]).any(-1)
    fit = torch.where(changed, SAME_FIT - CHANGED_MARGIN, SAME_FIT)
    seeded = quantisation_error(x, centers, geometry) <= quantisation_error(x, frame_centers, geometry) * fit
    centers = torch.where(seeded[..., None, None], centers, frame_centers)
    affinity = torch.where(seeded[..., None, None], affinity, frame_affinity)
    return centers, affinity, seeded


def reconstruct(
    x: torch.Tensor, centers: torch.Tensor, processed: torch.Tensor, weights: torch.Tensor, residual: bool
) -> torch.Tensor:
    """Full-resolution tokens (B, nW, N, C) from the processed clusters, `weights` (B, nW, N, M).

    residual=False (TCA.md step 4): each token becomes the weighted sum of its processed clusters.
    residual=True: each token keeps its own input and adds the weighted sum of what the clustered
    blocks added to its clusters (processed - centers), so detail finer than a cluster survives.
    """
    if residual:
        return x + weights @ (processed - centers)
    return weights @ processed


def reconstruction_weights(
    x: torch.Tensor, centers: torch.Tensor, geometry: WindowGeometry, temperature: float, topk: int
) -> torch.Tensor:
    """Dense (B, nW, N, M) weights: each token's top-k allowed clusters, normalised, others zero."""
    logits = -temperature * squared_distance(x, centers)
    logits = logits.masked_fill(~geometry.allowed[None], _MASKED)
    k = min(topk, logits.shape[-1])
    top_logits, top_index = logits.topk(k, dim=-1)
    weights = torch.zeros_like(logits).scatter_(-1, top_index, top_logits.softmax(-1))
    return weights * geometry.token_valid[None, :, :, None]
