"""A Swin backbone forward pass with window token clustering and TCA (TCA.md).

`AcceleratedSwinBackbone` wraps a `transformers` `SwinBackbone` and reuses its modules (embeddings,
blocks, patch merging, output norms). With method "none" it runs them exactly as the original does.
Otherwise, at block `alpha` of the chosen stage, each w x w window is clustered into h' x h' tokens,
the remaining blocks of the stage run on the clustered grid with window h' (shift h'//2, resized
relative position bias, padding-only clusters masked out as keys), and the stage output is
reconstructed to full resolution. Only the clustering step of TCA loops over frames; everything
else runs on the whole batch.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import BackboneOutput
from transformers.models.swin.modeling_swin import window_partition, window_reverse

from . import clustering, reuse
from .config import AccelerationConfig
from .memory import ClusterMemory, ReuseCache

_MASKED = -100.0  # the value Swin itself adds to attention logits between disallowed pairs
KEPT_MAX = 64  # attention masks and biases kept per backbone: 1 bias per block, about 8 masks per frame size


@dataclass
class FrameStream:
    """Consecutive rows of a batch that are frames of one video, in order: `frame_indices`;
    `bridged`, the frames between them that were reused whole (frame reuse: no gap); `reuse`, the
    video's window-reuse cache, and `patches`, its frames' patch means (window reuse)."""

    memory: ClusterMemory
    frame_indices: list[int]
    reuse: ReuseCache | None = None
    bridged: frozenset = frozenset()
    patches: torch.Tensor | None = None  # window reuse: the frames' patch means (`reuse.patch_means`)


@dataclass
class FrameStats:
    """What the acceleration did on one frame."""

    reset: str | None  # why per-frame clustering ran instead of TCA ("start", "gap", ...), or None
    reassigned: float | None  # fraction of real tokens whose clusters did not come from the previous frame
    token_ratio: float  # clustered tokens / original tokens in the clustered blocks (1.0: no clustering)
    windows_computed: float | None = None  # window reuse: share of the blocks' windows computed
    reuse_reset: str | None = None  # window reuse: why the frame was computed whole, or None
    frame_reused: bool = False  # frame reuse: the results are those of an earlier frame

    @classmethod
    def unclustered(cls, frames: int) -> list[FrameStats]:
        """The stats of `frames` frames that ran without clustering (what reuse did is set after)."""
        return [cls(None, None, 1.0) for _ in range(frames)]


class AcceleratedSwinBackbone(nn.Module):
    """Drop-in replacement for a `SwinBackbone` (same inputs and `feature_maps`)."""

    def __init__(self, backbone: nn.Module, acceleration: AccelerationConfig):
        super().__init__()
        self.backbone = backbone
        self.channels = backbone.channels
        self.window = backbone.config.window_size
        self.depths = list(backbone.config.depths)
        self.acceleration = acceleration
        self.streams: list[FrameStream] | None = None
        self.last_stats: list[FrameStats] = []
        self._plan: reuse.ReusePlan | None = None
        self._made: dict[tuple, torch.Tensor] = {}  # attention masks and biases, by what they depend on

    @property
    def acceleration(self) -> AccelerationConfig:
        return self._acceleration

    @acceleration.setter
    def acceleration(self, config: AccelerationConfig):
        self._acceleration = config.resolved(self.window, self.depths) if config.accelerated else config

    @contextmanager
    def streaming(self, streams: list[FrameStream]):
        """Within this context, batch rows are the frames of `streams`, in order (TCA needs this)."""
        self.streams = streams
        try:
            yield
        finally:
            self.streams = None

    def forward(self, pixel_values: torch.Tensor, **kwargs) -> BackboneOutput:
        swin = self.backbone.swin
        names, wanted = self.backbone.stage_names, set(self.backbone.out_features)
        hidden, dims = swin.embeddings(pixel_values)
        maps = [self._feature_map("stem", hidden, dims)] if "stem" in wanted else []
        self.last_stats = []
        self._plan = self._reuse_plan(tuple(pixel_values.shape[-2:]))
        for index, stage in enumerate(swin.encoder.layers):
            if self.acceleration.accelerated and index == self.acceleration.stage - 1:
                hidden = self._clustered_stage(stage, hidden, dims, index)
            else:
                for number, block in enumerate(stage.blocks):
                    hidden = self._block(block, hidden, dims, f"{index + 1}.{number}")
            if names[index + 1] in wanted:
                maps.append(self._feature_map(names[index + 1], hidden, dims))
            if stage.downsample is not None:
                hidden = stage.downsample(hidden, dims)
                dims = ((dims[0] + 1) // 2, (dims[1] + 1) // 2)
        self._finish_reuse(len(pixel_values))
        return BackboneOutput(feature_maps=tuple(maps))

    # --- window reuse ---------------------------------------------------------------------------

    def _reuse_plan(self, size: tuple[int, int]) -> reuse.ReusePlan | None:
        """The batch's reuse plan when window reuse is on and the rows are streams with caches."""
        cfg = self.acceleration
        if cfg.window_reuse is None or not self.streams or any(s.reuse is None for s in self.streams):
            return None
        signature = (size, tuple(sorted(cfg.to_dict().items())))
        streams = [reuse.StreamFrames(s.reuse, s.frame_indices, s.bridged, s.patches) for s in self.streams]
        return reuse.plan_frames(cfg, self.window, streams, signature)

    def _finish_reuse(self, batch: int):
        """Record in the frames' stats what reuse computed, and end the caches at the batch's frames."""
        plan, self._plan = self._plan, None
        if plan is None:
            return
        reuse.finish(plan)
        if not self.last_stats:
            self.last_stats = FrameStats.unclustered(batch)
        for stats, frame in zip(self.last_stats, plan.frames):
            stats.windows_computed, stats.reuse_reset = frame.computed_share, frame.reason

    def _block(self, block, hidden: torch.Tensor, dims: tuple[int, int], key: str) -> torch.Tensor:
        """One Swin block on every token, with window reuse when a plan is on."""
        if self._plan is None:
            return block(hidden, dims, always_partition=True)[0]
        w = self.window
        layout = reuse.WindowLayout(*dims, w, int(block.shift_size))

        def mask():
            padded = layout.padded
            made = block.get_attn_mask(*padded, dtype=hidden.dtype, device=hidden.device)
            if made is None:
                count = (padded[0] // w) * (padded[1] // w)
                made = torch.zeros((), dtype=hidden.dtype, device=hidden.device).expand(count, w * w, w * w)
            return made

        runner = BlockRunner(
            block,
            layout,
            lambda: self._kept(("mask", layout, hidden.dtype, hidden.device), mask),
            lambda: self._bias(block, w, hidden.dtype),
        )
        runner.whole = lambda x: block(x, dims, always_partition=True)[0]
        return reuse.reusing_block(runner, hidden, key, self._plan)

    def _feature_map(self, name: str, hidden: torch.Tensor, dims: tuple[int, int]) -> torch.Tensor:
        batch, _, channels = hidden.shape
        hidden = self.backbone.hidden_states_norms[name](hidden)
        return hidden.view(batch, *dims, channels).permute(0, 3, 1, 2).contiguous()

    # --- the clustered stage -------------------------------------------------------------------

    def _clustered_stage(self, stage: nn.Module, hidden: torch.Tensor, dims: tuple[int, int], index: int):
        cfg, w = self.acceleration, self.window
        for number, block in enumerate(stage.blocks[: cfg.alpha]):
            hidden = self._block(block, hidden, dims, f"{index + 1}.{number}")

        batch, _, channels = hidden.shape
        height, width = dims
        pad_h, pad_w = -height % w, -width % w
        padded_h, padded_w = height + pad_h, width + pad_w
        grid_x = F.pad(hidden.view(batch, height, width, channels), (0, 0, 0, pad_w, 0, pad_h))
        windows = window_partition(grid_x, w).view(batch, -1, w * w, channels)
        valid = torch.ones(height, width, dtype=torch.bool, device=hidden.device)
        valid = F.pad(valid, (0, pad_w, 0, pad_h))
        geometry = clustering.window_geometry(
            window_partition(valid[None, :, :, None], w)[..., 0], cfg.grid, cfg.radius
        )

        tokens = windows.float()
        signature = (height, width, channels, w, cfg.grid, cfg.radius)
        centers, _ = self._cluster(tokens, geometry, signature)
        weights = clustering.reconstruction_weights(tokens, centers, geometry, cfg.temperature, cfg.topk)

        g = cfg.grid
        grid_h, grid_w = padded_h // w * g, padded_w // w * g
        clustered = window_reverse(centers.to(hidden.dtype).reshape(-1, g, g, channels), g, grid_h, grid_w)
        center_valid = window_reverse(geometry.center_valid.reshape(-1, g, g, 1), g, grid_h, grid_w)[0, ..., 0]
        clustered = clustered.reshape(batch, grid_h * grid_w, channels)
        masks = {shift: _window_mask(center_valid, g, shift, hidden.dtype) for shift in {0, g // 2}}  # (nW, M, M)
        for number, block in enumerate(stage.blocks[cfg.alpha :], start=cfg.alpha):
            shifted = number % 2 == 1  # Swin shifts every second block
            key = f"{index + 1}.{number}c"
            clustered = self._reusing_clustered_block(block, clustered, (grid_h, grid_w), masks, shifted, key)

        out_centers = window_partition(clustered.view(batch, grid_h, grid_w, channels), g)
        out_centers = out_centers.view(batch, -1, g * g, channels)
        residual = cfg.reconstruction == "residual"
        restored = clustering.reconstruct(
            windows, centers.to(hidden.dtype), out_centers, weights.to(hidden.dtype), residual
        )
        restored = window_reverse(restored.reshape(-1, w, w, channels), w, padded_h, padded_w)
        return restored[:, :height, :width].reshape(batch, height * width, channels)

    def _cluster(self, tokens: torch.Tensor, geometry: clustering.WindowGeometry, signature: tuple):
        """Centers (B, nW, M, C) for every frame of the batch; records per-frame stats."""
        cfg = self.acceleration
        ratio = geometry.neighbors.shape[1] / geometry.neighbors.shape[0]  # M / N tokens per window
        if cfg.method == "clustering":
            centers, affinity = clustering.per_frame_clustering(tokens, geometry, cfg.iters, cfg.temperature)
            self.last_stats = [FrameStats("per_frame", 1.0, ratio) for _ in range(tokens.shape[0])]
            return centers, affinity

        streams = self.streams or [FrameStream(ClusterMemory(), list(range(tokens.shape[0])))]
        if sum(len(s.frame_indices) for s in streams) != tokens.shape[0]:
            raise ValueError("the frame streams do not cover the batch")
        # Per-frame clustering of every frame, batched: TCA's fallback per window and on a reset.
        per_frame = clustering.per_frame_clustering(tokens, geometry, cfg.iters, cfg.temperature)
        centers, affinities, row = [], [], 0
        for stream in streams:
            for frame_index in stream.frame_indices:
                frame = tokens[row : row + 1]
                candidate = (per_frame[0][row : row + 1], per_frame[1][row : row + 1])
                center, affinity, stats = self._temporal_step(
                    frame, candidate, stream, frame_index, geometry, signature
                )
                stats.token_ratio = ratio
                centers.append(center)
                affinities.append(affinity)
                self.last_stats.append(stats)
                row += 1
        return torch.cat(centers), torch.cat(affinities)

    def _temporal_step(self, frame, per_frame, stream: FrameStream, frame_index: int, geometry, signature):
        """TCA for one frame (1, nW, N, C) of a video, continuing and then updating its memory.
        `per_frame`: the frame's per-frame clustering (centers, affinity): the clusters on a reset and
        the fallback of every window that the memory does not fit better."""
        cfg = self.acceleration
        valid = geometry.token_valid[None]
        memory = stream.memory
        reason = memory.reset_reason(frame_index, signature, stream.bridged)
        if reason is None:
            rho = clustering.temporal_cosine(frame, memory.tokens[None])
            if rho[valid].mean().item() < cfg.cut_threshold:
                reason = "scene_cut"
        if reason is None:
            stable = (rho >= cfg.tau) & valid
            center, affinity, seeded = clustering.temporal_clustering(
                frame, memory.affinity[None], stable, geometry, cfg.tca_iters, cfg.temperature, per_frame
            )
            carried = stable & seeded[..., None]  # tokens whose clusters came from the memory
            reassigned = 1.0 - carried.sum().item() / valid.sum().item()
        else:
            center, affinity = per_frame
            reassigned = 1.0
        memory.update(frame[0], affinity[0], frame_index, signature)
        return center, affinity, FrameStats(reason, reassigned, 0.0)

    def _reusing_clustered_block(self, block, hidden, dims, masks: dict, shifted: bool, key: str):
        """`_clustered_block`, with window reuse on the clustered grid when a plan is on."""
        if self._plan is None:
            return self._clustered_block(block, hidden, dims, masks, shifted)
        g = self.acceleration.grid
        layout = reuse.WindowLayout(*dims, g, g // 2 if shifted else 0)
        runner = BlockRunner(block, layout, lambda: masks[layout.shift], lambda: self._bias(block, g, hidden.dtype))
        runner.whole = lambda x: self._clustered_block(block, x, dims, masks, shifted)
        return reuse.reusing_block(runner, hidden, key, self._plan)

    def _clustered_block(self, block, hidden, dims, masks: dict, shifted: bool) -> torch.Tensor:
        """One Swin block on the clustered grid: window h', shift h'//2, resized position bias;
        `masks`: the grid's attention masks (nW, M, M) by shift."""
        g = self.acceleration.grid
        shift = g // 2 if shifted else 0
        batch, _, channels = hidden.shape
        height, width = dims

        shortcut = hidden
        x = block.layernorm_before(hidden).view(batch, height, width, channels)
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        windows = window_partition(x, g).view(batch, -1, g * g, channels)
        attended = _window_attention(block.attention, windows, masks[shift], self._bias(block, g, x.dtype))
        x = window_reverse(attended.reshape(-1, g, g, channels), g, height, width)
        if shift:
            x = torch.roll(x, shifts=(shift, shift), dims=(1, 2))
        hidden = shortcut + block.drop_path(block.dropout(x.reshape(batch, height * width, channels)))
        return hidden + block.dropout(block.mlp(block.layernorm_after(hidden)))

    def _kept(self, key: tuple, make) -> torch.Tensor:
        """`make()`, made once per `key` (what it depends on) and then kept: the blocks' attention masks
        and position biases are the same on every call at one size. Kept only where no gradient is
        recorded (inference), so that a bias made then never stands in for one to differentiate."""
        if torch.is_grad_enabled():
            return make()
        made = self._made.get(key)
        if made is None:
            if len(self._made) >= KEPT_MAX:  # sizes come and go over a long run: start again
                self._made.clear()
            made = self._made[key] = make()
        return made

    def _bias(self, block, g: int, dtype) -> torch.Tensor:
        """(heads, g*g, g*g) relative position bias for window g, bilinearly resized from the w table;
        kept per block, window and dtype while the table is unchanged (its storage and version)."""
        table = block.attention.relative_position_bias.relative_position_bias_table  # ((2w-1)^2, heads)
        key = ("bias", id(block), g, dtype, table.data_ptr(), table._version)
        return self._kept(key, lambda: self._made_bias(table, g, dtype))

    def _made_bias(self, table: torch.Tensor, g: int, dtype) -> torch.Tensor:
        w = self.window
        heads = table.shape[-1]
        table = table.T.reshape(1, heads, 2 * w - 1, 2 * w - 1)
        if g != w:
            table = F.interpolate(table.float(), size=(2 * g - 1, 2 * g - 1), mode="bilinear", align_corners=True)
        table = table.reshape(heads, -1).to(dtype)
        return table[:, _relative_position_index(g, table.device)]


class BlockRunner:
    """A Swin block as window reuse runs it (`reuse.reusing_block`): on its `layout`, `whole` (the
    block as it is, set by the caller) or on gathered windows, with the block's attention mask
    (nW, M, M) and relative position bias (heads, M, M), made by `mask` and `bias` when first needed
    (a block that computes every window does not need them)."""

    def __init__(self, block, layout: reuse.WindowLayout, mask, bias):
        self.block, self.layout, self._make = block, layout, (mask, bias)
        self.whole = None

    def normed(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.block.layernorm_before(hidden)

    def windows(self, raw: torch.Tensor, normed: torch.Tensor, ids: torch.Tensor, valid=None) -> torch.Tensor:
        """The block's output (K, M, C) on K windows: raw inputs, normed inputs, window ids and, where
        the map is padded, `valid` (K, M, 1): 1 at the map's tokens. As in Swin, the MLP runs on the
        map's tokens only (padding tokens keep the attention's output; they are cut off later)."""
        block = self.block
        mask, bias = (make() for make in self._make)
        hidden = raw + _window_attention(block.attention, normed[None], mask[ids], bias)[0]
        if valid is None:
            return hidden + block.mlp(block.layernorm_after(hidden))
        tokens = valid[..., 0].bool()
        kept = hidden[tokens]
        hidden[tokens] = kept + block.mlp(block.layernorm_after(kept))
        return hidden


def _relative_position_index(size: int, device) -> torch.Tensor:
    """(M, M) index into a flattened (2*size-1)^2 relative-offset table, as Swin defines it."""
    coords = torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")).flatten(1)
    offset = coords[:, :, None] - coords[:, None, :] + size - 1  # (2, M, M)
    return (offset[0] * (2 * size - 1) + offset[1]).to(device)


def _window_mask(center_valid: torch.Tensor, window: int, shift: int, dtype) -> torch.Tensor:
    """Additive (nW, M, M) mask: shifted-window regions (as in Swin) and padding-only keys."""
    height, width = center_valid.shape
    valid = torch.roll(center_valid, shifts=(-shift, -shift), dims=(0, 1)) if shift else center_valid
    keys_ok = window_partition(valid[None, :, :, None], window).flatten(1)  # (nW, M)
    allowed = keys_ok[:, None, :].expand(-1, window * window, -1)
    if shift:
        rows = torch.arange(height, device=valid.device)
        cols = torch.arange(width, device=valid.device)
        row_region = (rows >= height - window).long() + (rows >= height - shift).long()
        col_region = (cols >= width - window).long() + (cols >= width - shift).long()
        region = (row_region[:, None] * 3 + col_region[None, :])[None, :, :, None]
        region = window_partition(region, window).flatten(1)  # (nW, M)
        allowed = allowed & (region[:, None, :] == region[:, :, None])
    zero = torch.zeros((), dtype=dtype, device=valid.device)
    return torch.where(allowed, zero, torch.tensor(_MASKED, dtype=dtype, device=valid.device))


def _window_attention(attention, windows: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Swin window attention with the block's own projections: windows (B, nW, M, C) -> same shape.
    The windows are folded into the heads axis, so that the call is the 4-D one that PyTorch's fused
    CPU kernel takes (2-2.6x faster here than the 5-D math fallback) and the mask broadcasts over B."""
    batch, num_windows, length, channels = windows.shape
    heads, head_dim = attention.num_attention_heads, attention.head_dim

    def split(projection):
        projected = projection(windows).view(batch, num_windows, length, heads, head_dim)
        return projected.transpose(2, 3).reshape(batch, num_windows * heads, length, head_dim)

    query, key, value = split(attention.q_proj), split(attention.k_proj), split(attention.v_proj)
    # A 4-D mask (broadcast over B): with a 3-D one PyTorch falls back to its math kernel (2.6x slower here).
    attn_mask = (bias[None] + mask[:, None]).reshape(1, num_windows * heads, length, length)
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=attn_mask, scale=attention.scaling)
    out = out.view(batch, num_windows, heads, length, head_dim).transpose(2, 3)
    return attention.o_proj(out.reshape(batch, num_windows, length, channels))
