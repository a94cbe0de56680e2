"""Per-video state: TCA's cluster memory and the instance tracker's state, exportable and bounded."""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors


@dataclass
class ClusterMemory:
    """The clustering layer's state after the last frame of a video (one frame's worth).

    tokens: (nW, N, C) float32 tokens at the clustering layer; affinity: (nW, N, M) their soft
    assignment; signature: the feature-map size and settings they belong to (a change resets).
    """

    tokens: torch.Tensor | None = None
    affinity: torch.Tensor | None = None
    frame_index: int = -1
    signature: tuple = ()

    def reset_reason(self, frame_index: int, signature: tuple, bridged=frozenset()) -> str | None:
        """Why frame `frame_index` can't continue from this memory, or None if it can; frames in
        `bridged` (reused whole, `ReuseCache`) between the memory's last frame and this one are no gap."""
        if self.tokens is None:
            return "start"
        return continuity(self.frame_index, self.signature, frame_index, signature, bridged)

    def update(self, tokens: torch.Tensor, affinity: torch.Tensor, frame_index: int, signature: tuple):
        self.tokens, self.affinity = tokens, affinity
        self.frame_index, self.signature = frame_index, signature

    def clear(self):
        self.tokens = self.affinity = None
        self.frame_index, self.signature = -1, ()


def continuity(last: int, last_signature: tuple, frame_index: int, signature: tuple, bridged) -> str | None:
    """Why frame `frame_index` (of `signature`) does not follow frame `last` (of `last_signature`):
    "size_change", "gap" (a seek, or frames missing; those in `bridged` do not count), or None."""
    if signature != last_signature:
        return "size_change"
    previous = frame_index - 1
    while previous in bridged and previous > last:
        previous -= 1
    return "gap" if previous != last else None


@dataclass
class ReuseCache:
    """Window reuse's state for one video (docs/tca.md, "Reuse"): per block, each window's input the
    last time it was computed and the block's output for it then, (nW, M, C) each, keyed by block
    ("stage.block", "c" appended on the clustered grid; "patches": the patch means each first-block
    window was last computed on); and for frame reuse the patch means (3, h/4, w/4) of the last frame
    the model ran on, with that frame's model outputs and results.

    frame_index, signature: the last frame the backbone ran on and its size and settings; since_full:
    backbone frames since the last one computed whole (a refresh is due at `refresh`). Bounded: one
    frame's worth of block inputs and outputs, one frame of patch means and outputs."""

    blocks: dict[str, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    frame_index: int = -1
    signature: tuple = ()
    since_full: int = 0
    patches: torch.Tensor | None = None
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)
    result: object = None  # that frame's results, at hand in this process only (not exported)

    def clear(self):
        self.blocks, self.outputs, self.patches, self.result = {}, {}, None, None
        self.frame_index, self.signature, self.since_full = -1, (), 0

    def nbytes(self) -> int:
        tensors = [t for pair in self.blocks.values() for t in pair] + list(self.outputs.values())
        tensors += [self.patches] if self.patches is not None else []
        return sum(t.numel() * t.element_size() for t in tensors)


@dataclass
class TrackState:
    """Online instance tracking: one slot per decoder query, kept in matched order across frames.

    embeddings: (Q, D) last frame's normalised query embeddings in slot order; ids: (Q,) the
    instance id each slot carries (-1 none yet).
    """

    embeddings: torch.Tensor | None = None
    ids: torch.Tensor | None = None
    next_id: int = 1


@dataclass
class VideoMemory:
    """Everything the segmenter remembers about one video between clips.

    next_frame: the index of the frame after the last one segmented (-1: none yet), whatever the
    method; lineage: names the tracker whose instance ids this memory's results carry."""

    cluster: ClusterMemory = field(default_factory=ClusterMemory)
    tracks: TrackState = field(default_factory=TrackState)
    reuse: ReuseCache = field(default_factory=ReuseCache)
    next_frame: int = -1
    lineage: str = ""

    def to_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(tensors on CPU, string metadata): the memory in a serialisable form."""
        tensors = {}
        for prefix, state, names in (
            ("cluster.", self.cluster, ("tokens", "affinity")),
            ("tracks.", self.tracks, ("embeddings", "ids")),
        ):
            for name in names:
                value = getattr(state, name)
                if value is not None:
                    tensors[prefix + name] = value.detach().cpu().contiguous()
        tensors.update(_reuse_tensors(self.reuse))
        metadata = {
            "frame_index": str(self.cluster.frame_index),
            "signature": json.dumps(list(self.cluster.signature)),
            "next_id": str(self.tracks.next_id),
            "next_frame": str(self.next_frame),
            "lineage": self.lineage,
            "reuse": json.dumps(
                dict(
                    frame_index=self.reuse.frame_index,
                    signature=list(self.reuse.signature),
                    since_full=self.reuse.since_full,
                )
            ),
        }
        return tensors, metadata

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], metadata: dict[str, str], device=None) -> VideoMemory:
        def get(key):
            value = tensors.get(key)
            return None if value is None else value.to(device)

        cluster = ClusterMemory(
            tokens=get("cluster.tokens"),
            affinity=get("cluster.affinity"),
            frame_index=int(metadata["frame_index"]),
            signature=tuple(json.loads(metadata["signature"])),
        )
        tracks = TrackState(
            embeddings=get("tracks.embeddings"),
            ids=get("tracks.ids"),
            next_id=int(metadata["next_id"]),
        )
        return cls(
            cluster=cluster,
            tracks=tracks,
            reuse=_reuse_cache(tensors, json.loads(metadata.get("reuse", "{}")), device),
            next_frame=int(metadata.get("next_frame", -1)),
            lineage=metadata.get("lineage", ""),
        )

    def to_bytes(self) -> bytes:
        tensors, metadata = self.to_tensors()
        return save_safetensors(tensors, metadata=metadata)

    @classmethod
    def from_bytes(cls, data: bytes, device=None) -> VideoMemory:
        # The safetensors format: an 8-byte little-endian header length, then a JSON header that
        # carries the string metadata under "__metadata__".
        header_size = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_size]).get("__metadata__", {})
        return cls.from_tensors(load_safetensors(data), metadata, device)


def _reuse_tensors(cache: ReuseCache) -> dict[str, torch.Tensor]:
    """Copies (window reuse updates the cache's tensors in place)."""
    tensors = {}
    for key, (inputs, outputs) in cache.blocks.items():
        tensors[f"reuse.block.{key}.input"] = inputs.detach().cpu().clone()
        tensors[f"reuse.block.{key}.output"] = outputs.detach().cpu().clone()
    for key, value in cache.outputs.items():
        tensors[f"reuse.outputs.{key}"] = value.detach().cpu().contiguous()
    if cache.patches is not None:
        tensors["reuse.patches"] = cache.patches.detach().cpu().contiguous()
    return tensors


def _reuse_cache(tensors: dict[str, torch.Tensor], state: dict, device) -> ReuseCache:
    blocks, outputs = {}, {}
    for name, value in tensors.items():
        if name.startswith("reuse.block.") and name.endswith(".input"):
            key = name[len("reuse.block.") : -len(".input")]
            blocks[key] = (value.to(device), tensors[f"reuse.block.{key}.output"].to(device))
        elif name.startswith("reuse.outputs."):
            outputs[name[len("reuse.outputs.") :]] = value.to(device)
    patches = tensors.get("reuse.patches")
    return ReuseCache(
        blocks=blocks,
        frame_index=int(state.get("frame_index", -1)),
        signature=_tupled(state.get("signature", [])),
        since_full=int(state.get("since_full", 0)),
        patches=None if patches is None else patches.to(device),
        outputs=outputs,
    )


def _tupled(value):
    """JSON lists back to the tuples they were (signatures nest them)."""
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value


class MemoryBank:
    """Memories of the videos a segmenter is working on, least recently used evicted beyond `max_videos`."""

    def __init__(self, max_videos: int = 64):
        if max_videos < 1:
            raise ValueError(f"max_videos must be >= 1, got {max_videos}")
        self.max_videos = max_videos
        self._memories: OrderedDict[str, VideoMemory] = OrderedDict()

    def get(self, video_id: str) -> VideoMemory:
        """The video's memory (a fresh one if it has none), marked as most recently used."""
        memory = self._memories.get(video_id) or VideoMemory()
        self.put(video_id, memory)
        return memory

    def put(self, video_id: str, memory: VideoMemory):
        self._memories.pop(video_id, None)
        self._memories[video_id] = memory
        while len(self._memories) > self.max_videos:
            self._memories.popitem(last=False)

    def drop(self, video_id: str):
        self._memories.pop(video_id, None)

    def __contains__(self, video_id: str) -> bool:
        return video_id in self._memories

    def __len__(self) -> int:
        return len(self._memories)
