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

    def reset_reason(self, frame_index: int, signature: tuple) -> str | None:
        """Why frame `frame_index` can't continue from this memory, or None if it can."""
        if self.tokens is None:
            return "start"
        if signature != self.signature:
            return "size_change"
        if frame_index != self.frame_index + 1:
            return "gap"
        return None

    def update(self, tokens: torch.Tensor, affinity: torch.Tensor, frame_index: int, signature: tuple):
        self.tokens, self.affinity = tokens, affinity
        self.frame_index, self.signature = frame_index, signature

    def clear(self):
        self.tokens = self.affinity = None
        self.frame_index, self.signature = -1, ()


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
        metadata = {
            "frame_index": str(self.cluster.frame_index),
            "signature": json.dumps(list(self.cluster.signature)),
            "next_id": str(self.tracks.next_id),
            "next_frame": str(self.next_frame),
            "lineage": self.lineage,
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
