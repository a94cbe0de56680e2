"""Window reuse inside the Swin backbone: per video, each block's windows that did not change since
the block last computed them take its output from then; the others are gathered over the clip's
frames into one batch (docs/tca.md, "Reuse"). Decisions run frame by frame (they need only the
inputs); the compute stays batched, block by block.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers.models.swin.modeling_swin import window_partition, window_reverse

from .config import CAMERA_MOTION_GAIN, REUSE_CUT_SHARE, REUSE_PATCH
from .memory import ReuseCache, continuity


@dataclass(frozen=True)
class WindowLayout:
    """How a block sees a (height x width) token map: padded to whole windows, rolled by `shift`,
    cut into `window` x `window` windows."""

    height: int
    width: int
    window: int
    shift: int

    @property
    def padded(self) -> tuple[int, int]:
        return self.height + -self.height % self.window, self.width + -self.width % self.window

    @property
    def has_padding(self) -> bool:
        """Whether the map is padded to whole windows (its size is not a multiple of the window)."""
        return self.padded != (self.height, self.width)

    def partition(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, H*W, C) tokens to (B, nW, M, C) windows (zero tokens where padded)."""
        batch, _, channels = hidden.shape
        padded_h, padded_w = self.padded
        grid = hidden.view(batch, self.height, self.width, channels)
        if self.has_padding:
            grid = F.pad(grid, (0, 0, 0, padded_w - self.width, 0, padded_h - self.height))
        if self.shift:
            grid = torch.roll(grid, shifts=(-self.shift, -self.shift), dims=(1, 2))
        return window_partition(grid, self.window).view(batch, -1, self.window**2, channels)

    @property
    def count(self) -> int:
        """The number of windows."""
        padded_h, padded_w = self.padded
        return (padded_h // self.window) * (padded_w // self.window)

    def valid(self, device, dtype=torch.float32) -> torch.Tensor:
        """(nW, M, 1): 1 at the windows' tokens of the map, 0 at their padding."""
        ones = torch.ones(1, self.height * self.width, 1, device=device, dtype=dtype)
        return self.partition(ones)[0]

    def reverse(self, windows: torch.Tensor) -> torch.Tensor:
        """(B, nW, M, C) windows back to (B, H*W, C) tokens."""
        batch, _, _, channels = windows.shape
        padded_h, padded_w = self.padded
        grid = window_reverse(windows.reshape(-1, self.window, self.window, channels), self.window, padded_h, padded_w)
        if self.shift:
            grid = torch.roll(grid, shifts=(self.shift, self.shift), dims=(1, 2))
        return grid[:, : self.height, : self.width].reshape(batch, self.height * self.width, channels)


@dataclass
class FramePlan:
    """What reuse does with one frame of the batch: `full` (every window computed) and why (`reason`:
    "start", "gap", "size_change", "refresh", "camera" when the camera moved, "changed" when
    most windows changed (REUSE_CUT_SHARE), or None), and the
    windows computed and seen over the blocks so far."""

    full: bool
    reason: str | None
    computed: int = 0
    windows: int = 0
    first_ids: torch.Tensor | None = None  # the first block's windows to compute, decided on the pixels

    def count(self, computed: int, windows: int):
        """A block computed `computed` of this frame's `windows` windows."""
        self.computed += computed
        self.windows += windows

    @property
    def computed_share(self) -> float:
        return self.computed / self.windows if self.windows else 1.0


@dataclass
class ReusePlan:
    """The frames of one forward pass, per video: `streams` pairs each video's reuse cache with its
    batch rows, in frame order; `frames` holds each row's `FramePlan`."""

    threshold: float
    streams: list[tuple[ReuseCache, list[int]]]
    frames: list[FramePlan]
    first_key: str | None = None  # the first block seen, where a frame with most windows changed turns full
    signature: tuple = ()
    frame_indices: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class StreamFrames:
    """One video's frames in a forward pass: its cache, the frames' indices (batch order), the frames
    reused whole between them (`bridged`), and their patch means (`patch_means`)."""

    cache: ReuseCache
    frame_indices: list[int]
    bridged: frozenset
    patches: torch.Tensor


def plan_frames(config, window: int, streams: list[StreamFrames], signature: tuple) -> ReusePlan:
    """Which frames are computed whole (a reset, a refresh, the camera moved, or most windows changed) and which
    windows the first block computes, decided on the patch means before any block runs. `config`:
    the `AccelerationConfig` (window_reuse, pixel_change, refresh); `window`: the first stage's."""
    frames, pairs, indices, row = [], [], [], 0
    for stream in streams:
        cache = stream.cache
        last, last_signature, since_full = cache.frame_index, cache.signature, cache.since_full
        started = last >= 0 and bool(cache.blocks)
        layout = WindowLayout(*stream.patches.shape[-2:], window, 0)
        patches = layout.partition(stream.patches.flatten(2).transpose(1, 2))  # (T, nW, M, 3)
        reference = cache.blocks.get(PATCH_KEY, (None,))[0] if started else None
        before = cache.blocks.get(FRAME_KEY, (None,))[0] if started else None
        if before is not None and before.shape != stream.patches.shape[1:]:
            before = None
        moved = camera_moved(stream.patches, before)
        rows = []
        for position, frame_index in enumerate(stream.frame_indices):
            reason = (
                "start" if not started else continuity(last, last_signature, frame_index, signature, stream.bridged)
            )
            if reason is None and since_full >= config.refresh - 1:
                reason = "refresh"
            plan = FramePlan(full=reason is not None, reason=reason)
            if moved[position] and not plan.full:
                plan.full, plan.reason = True, "camera"
            reference = _first_block(plan, patches[position], reference, config.pixel_change)
            since_full = 0 if plan.full else since_full + 1
            started, last, last_signature = True, frame_index, signature
            frames.append(plan)
            rows.append(row)
            indices.append(frame_index)
            row += 1
        cache.blocks[PATCH_KEY] = (reference, reference.new_empty(0))
        cache.blocks[FRAME_KEY] = (
            stream.patches[-1].clone(memory_format=torch.contiguous_format),
            reference.new_empty(0),
        )
        pairs.append((cache, rows))
    return ReusePlan(config.window_reuse, pairs, frames, signature=signature, frame_indices=indices)


PATCH_KEY = "patches"  # the cache's entry of the patch means each first-block window was last computed on
FRAME_KEY = "frame"  # the cache's entry of the last frame's patch means (3, h, w), for `camera_moved`


def _first_block(plan: FramePlan, patches: torch.Tensor, reference, threshold: float) -> torch.Tensor:
    """Decide a frame's first-block windows from its patch means (nW, M, 3) against `reference`'s
    (None: none yet), turning the frame full when most changed; returns the updated reference."""
    if plan.full or reference is None or reference.shape != patches.shape:
        plan.full = True
        plan.reason = plan.reason or "start"
        return patches.clone()
    changed = (patches - reference).abs().amax(dim=(1, 2)) >= threshold
    if changed.float().mean().item() >= REUSE_CUT_SHARE:
        plan.full, plan.reason = True, "changed"
        return patches.clone()
    plan.first_ids = changed.nonzero()[:, 0]
    reference = reference.clone()
    reference[plan.first_ids] = patches[plan.first_ids]
    return reference


def camera_moved(patches: torch.Tensor, before: torch.Tensor | None) -> list[bool]:
    """For each frame of patch means (T, 3, h, w), whether the camera moved since the frame before it
    (`before` (3, h, w) for the first; None: it did not). Frames are compared in grey, each brought to
    the same mean (a change of light is no motion); the camera moved when the fitted shift and zoom
    (`_camera_fit`) leave less than CAMERA_MOTION_GAIN of the unmoved frame's change."""
    frames = patches if before is None else torch.cat([before[None], patches])
    if len(frames) < 2:
        return [False] * len(patches)
    grey = frames.float().mean(1)
    grey = grey / grey.mean(dim=(1, 2), keepdim=True).clamp_min(1e-3)
    earlier, later = grey[:-1], grey[1:]
    inner = (slice(None), slice(CAMERA_BORDER, -CAMERA_BORDER), slice(CAMERA_BORDER, -CAMERA_BORDER))
    if min(later[inner].shape[1:], default=0) < 3:
        return [False] * len(patches)

    def change(reference):
        return (later - reference)[inner].abs().clamp(max=CAMERA_ROBUST).flatten(1).mean(1)

    still = change(earlier)
    moved = ((change(_camera_fit(earlier, later, inner)) < CAMERA_MOTION_GAIN * still) & (still > 1e-4)).tolist()
    return moved if before is not None else [False] + moved


CAMERA_BORDER = 2  # patches at the border left out of the camera fit (a shift brings them in from outside)
CAMERA_ROBUST = 0.1  # a patch's change counts up to this much (relative to the mean): moving objects weigh little
CAMERA_STEPS = 2  # Gauss-Newton steps of the camera fit


def _camera_fit(earlier: torch.Tensor, later: torch.Tensor, inner) -> torch.Tensor:
    """`earlier` (T, h, w) moved by the global shift (dx, dy patches) and zoom (1 - e about the centre)
    that best carry it onto `later`: Gauss-Newton steps on the linearised change, each patch weighted
    down where its change exceeds CAMERA_ROBUST / 2 (Huber); returns the moved frames."""
    steps, height, width = earlier.shape
    ys, xs = torch.meshgrid(
        torch.linspace(-1, 1, height, device=earlier.device),
        torch.linspace(-1, 1, width, device=earlier.device),
        indexing="ij",
    )
    x_cells, y_cells = xs * (width - 1) / 2, ys * (height - 1) / 2
    theta, moved = earlier.new_zeros(steps, 3), earlier
    for _ in range(CAMERA_STEPS):
        gx, gy = torch.zeros_like(moved), torch.zeros_like(moved)
        gx[:, :, 1:-1] = (moved[:, :, 2:] - moved[:, :, :-2]) / 2
        gy[:, 1:-1] = (moved[:, 2:] - moved[:, :-2]) / 2
        jacobian = torch.stack([gx, gy, -(x_cells * gx + y_cells * gy)], -1)[inner].reshape(steps, -1, 3)
        residual = (later - moved)[inner].reshape(steps, -1)
        weight = (CAMERA_ROBUST / 2 / residual.abs().clamp_min(1e-9)).clamp(max=1.0)
        normal = torch.einsum("tni,tn,tnj->tij", jacobian, weight, jacobian) + 1e-6 * torch.eye(3, device=moved.device)
        theta = theta + torch.linalg.solve(normal, torch.einsum("tni,tn,tn->ti", jacobian, weight, residual))
        theta = torch.cat([theta[:, :2].clamp(-3, 3), theta[:, 2:].clamp(-0.05, 0.05)], dim=1)
        dx, dy, e = (theta[:, k, None, None] for k in range(3))
        grid = torch.stack([xs * (1 - e) + dx * 2 / (width - 1), ys * (1 - e) + dy * 2 / (height - 1)], dim=-1)
        moved = F.grid_sample(earlier[:, None], grid, align_corners=True, padding_mode="border")[:, 0]
    return moved


def finish(plan: ReusePlan):
    """After the forward pass: each cache ends at its video's last frame of the batch."""
    for cache, rows in plan.streams:
        for row in rows:
            cache.since_full = 0 if plan.frames[row].full else cache.since_full + 1
        if rows:
            cache.frame_index, cache.signature = plan.frame_indices[rows[-1]], plan.signature


def windows_changed(windows: torch.Tensor, reference: torch.Tensor, threshold: float) -> torch.Tensor:
    """(nW,) bool: windows (nW, M, C) whose change from `reference` (root mean square over tokens,
    relative to the reference's) is at least `threshold`."""
    change = (windows.float() - reference.float()).flatten(1).norm(dim=1)
    return change >= threshold * reference.float().flatten(1).norm(dim=1).clamp_min(1e-6)


def reusing_block(runner, hidden: torch.Tensor, key: str, plan: ReusePlan) -> torch.Tensor:
    """One block over the batch (B, H*W, C) with window reuse; updates the caches under `key`.
    `runner` (`swin.BlockRunner`) has the block's `layout`, runs it `whole` (as the block itself does)
    and on gathered `windows` (raw and normed (K, M, C), their window ids)."""
    layout = runner.layout
    if plan.first_key is None:
        plan.first_key = key
    if all(frame.full for frame in plan.frames):
        return _whole_frames(runner, hidden, key, plan)
    raw = layout.partition(hidden)
    videos = _gather(raw, key, plan)
    batch, num_windows = raw.shape[:2]
    if sum(len(ids) for video in videos for ids in video.ids) == batch * num_windows:
        out = runner.whole(hidden)  # every window of every frame: the block as it is
        for video in videos:
            video.keep(key, _frame_windows(layout, out, video.rows[-1]))
        return out
    rows = torch.cat([torch.full((len(ids),), row, device=raw.device) for v in videos for row, ids in v.picked])
    ids = torch.cat([ids for video in videos for ids in video.ids])
    gathered = raw[rows, ids]
    valid = layout.valid(raw.device, raw.dtype)[ids] if layout.has_padding else None
    normed = runner.normed(gathered) if valid is None else runner.normed(gathered) * valid  # Swin pads after the norm
    computed = runner.windows(gathered, normed, ids, valid)
    out, start = torch.empty_like(raw), 0
    for video in videos:
        start = video.assemble(out, computed, start)
        video.keep(key, out[video.rows[-1]])
    return layout.reverse(out)


def _whole_frames(runner, hidden: torch.Tensor, key: str, plan: ReusePlan) -> torch.Tensor:
    """A block over a batch whose frames are all computed whole (starts, refreshes, cuts, a moving
    camera): the block as it is; each cache keeps its video's last frame's inputs and outputs."""
    out, layout = runner.whole(hidden), runner.layout
    for frame in plan.frames:
        frame.count(layout.count, layout.count)
    for cache, rows in plan.streams:
        cache.blocks[key] = (_frame_windows(layout, hidden, rows[-1]), _frame_windows(layout, out, rows[-1]))
    return out


def _frame_windows(layout: WindowLayout, tokens: torch.Tensor, row: int) -> torch.Tensor:
    """Row `row` of a batch of tokens (B, H*W, C) as its own (nW, M, C) windows."""
    return layout.partition(tokens[row : row + 1])[0]


@dataclass
class _Video:
    """One video's frames at a block: its cache, its batch `rows` (in order), the window ids each
    computes (`ids`) and the block's output for the video's frame before them (`previous`: the
    cached output, or None when the first frame is computed whole)."""

    cache: ReuseCache
    rows: list[int]
    ids: list[torch.Tensor]
    previous: torch.Tensor | None

    @property
    def picked(self):
        return zip(self.rows, self.ids)

    def assemble(self, out: torch.Tensor, computed: torch.Tensor, start: int) -> int:
        """Write the video's frames' output windows into `out` (B, nW, M, C): each frame's are the
        previous frame's with its own computed windows (from `computed` at `start`, in order) put
        in; returns where the next video's computed windows start."""
        previous = self.previous
        for row, ids in self.picked:
            if previous is not None:
                out[row] = previous
            out[row, ids] = computed[start : start + len(ids)]
            start += len(ids)
            previous = out[row]
        return start

    def keep(self, key: str, last: torch.Tensor):
        """The cache keeps the block's output windows `last` for the video's last frame of the batch
        (a copy: `last` may be a view of the batch's)."""
        self.cache.blocks[key] = (self.cache.blocks[key][0], last.clone())


def _gather(raw: torch.Tensor, key: str, plan: ReusePlan) -> list[_Video]:
    """Decide, frame by frame in each video's order, which windows (B, nW, M, C) the block computes;
    each cache's reference inputs are updated in place to the windows computed."""
    videos = []
    for cache, rows in plan.streams:
        entry = cache.blocks.get(key)
        usable = entry is not None and entry[0].shape == raw.shape[1:]
        reference, previous = (entry[0], entry[1]) if usable else (None, None)
        picked = []
        for row in rows:
            ids = _decide(raw[row], reference, plan.frames[row], plan.threshold, key == plan.first_key)
            if reference is None:  # a frame computed whole (ids: every window, in order)
                reference = raw[row].clone()
            else:
                reference[ids] = raw[row, ids]
            picked.append(ids)
        cache.blocks[key] = (reference, previous)
        videos.append(_Video(cache, rows, picked, previous))
    return videos


def _decide(windows, reference, frame: FramePlan, threshold: float, first_block: bool) -> torch.Tensor:
    """The ids of the windows (nW, M, C) of one frame to compute at this block: all of a full frame;
    at the first block, those whose pixels changed (`plan_frames`); later, those whose input
    changed by `threshold` or more since the block last computed them."""
    num_windows = windows.shape[0]
    if frame.full or reference is None:
        ids = torch.arange(num_windows, device=windows.device)
    elif first_block:
        ids = frame.first_ids
    else:
        ids = windows_changed(windows, reference, threshold).nonzero()[:, 0]
    frame.count(len(ids), num_windows)
    return ids


def patch_means(pixels: torch.Tensor) -> torch.Tensor:
    """(T, 3, h, w) pixels in 0..1 to their patches' mean colours (T, 3, h/REUSE_PATCH, w/REUSE_PATCH),
    what reuse compares frames by."""
    return F.avg_pool2d(pixels.float(), REUSE_PATCH, ceil_mode=True)


def frames_to_compute(patches: torch.Tensor, cache: ReuseCache, threshold: float) -> list[int | None]:
    """Frame reuse over one clip's patch means (T, 3, h', w'), in order: for each frame, None if it
    is computed, else the clip position of the computed frame whose results it takes (-1: the last
    frame computed before the clip, which the cache holds). A frame is reused when no patch's mean
    changed by `threshold` or more (any channel) since that frame. The cache must have been cleared
    where the clip does not continue it."""
    reference = cache.patches if cache.patches is not None and cache.patches.shape == patches.shape[1:] else None
    source = -1 if reference is not None and cache.outputs else None
    plan = []
    for position, frame in enumerate(patches):
        if source is not None and (frame - reference).abs().max().item() < threshold:
            plan.append(source)
        else:
            plan.append(None)
            reference, source = frame, position
    return plan
