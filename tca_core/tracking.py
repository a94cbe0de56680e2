"""Online instance tracking across frames by matching decoder query embeddings (as MinVIS does).

Each video keeps one slot per query. Every frame, the queries are matched to the slots by cosine
similarity of their embeddings (Hungarian matching), so a slot follows the same object from frame to
frame. A slot receives an instance id the first time it is detected and keeps it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from .memory import TrackState


def track_frame(
    state: TrackState, embeddings: torch.Tensor, detected: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match one frame's queries to the video's slots and update `state`.

    embeddings: (Q, D) query embeddings; detected: (Q,) bool, queries that are instances this frame.
    Returns (order, ids): slot k holds query order[k], and ids[k] is slot k's instance id (-1 if the
    slot never held a detection).
    """
    embeddings = F.normalize(embeddings.float(), dim=-1)
    num_queries = embeddings.shape[0]
    if state.embeddings is None or state.embeddings.shape != embeddings.shape:
        order = torch.arange(num_queries, device=embeddings.device)
        state.ids = torch.full((num_queries,), -1, dtype=torch.long, device=embeddings.device)
    else:
        similarity = (embeddings @ state.embeddings.T).cpu().numpy()  # (query, slot)
        queries, slots = linear_sum_assignment(similarity, maximize=True)
        order = torch.empty(num_queries, dtype=torch.long)
        order[torch.as_tensor(slots)] = torch.as_tensor(queries)
        order = order.to(embeddings.device)
    state.embeddings = embeddings[order]
    new = detected[order] & (state.ids < 0)
    count = int(new.sum())
    state.ids[new] = torch.arange(state.next_id, state.next_id + count, device=state.ids.device)
    state.next_id += count
    return order, state.ids.clone()
