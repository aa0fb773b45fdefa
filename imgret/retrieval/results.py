"""Rankings as results people read: hits with keys, labels, scores and clusters."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..core.errors import UserError
from ..store.collection import Collection

__all__ = ["Hit", "QueryResult", "results_for", "resolve_items"]


@dataclass
class Hit:
    rank: int  # 1 = best
    id: int  # position in the collection
    key: str  # file path or builtin:// key
    label: str | None
    score: float  # cosine similarity (or negative squared L2 distance)
    cluster: int | None


@dataclass
class QueryResult:
    query: str
    cluster: int | None  # the query's cluster in cluster mode
    hits: list[Hit]

    def to_dict(self) -> dict:
        return {
            "query": self.query,
            "cluster": self.cluster,
            "hits": [asdict(h) for h in self.hits],
        }


def results_for(
    collection: Collection,
    names: list[str],
    scores: np.ndarray,
    ids: np.ndarray,
    clusters: np.ndarray | None,
) -> list[QueryResult]:
    """Attach keys, labels and clusters to (n_queries, k) ids and scores."""
    clustering = collection.clustering
    assign = clustering.assignments if clustering is not None else None
    keys, labels = collection.keys, collection.labels
    out = []
    for qi, name in enumerate(names):
        hits = [
            Hit(
                rank=r + 1,
                id=int(i),
                key=keys[i],
                label=labels[i],
                score=float(s),
                cluster=int(assign[i]) if assign is not None else None,
            )
            for r, (i, s) in enumerate(zip(ids[qi], scores[qi], strict=True))
            if i >= 0
        ]
        cluster = int(clusters[qi]) if clusters is not None else None
        out.append(QueryResult(query=name, cluster=cluster, hits=hits))
    return out


def resolve_items(collection: Collection, refs: list[str]) -> list[int]:
    """Positions of items given by key, by file path (made absolute) or by position number."""
    out = []
    for ref in refs:
        pos = collection.position_of_key(ref)
        if pos is None and not ref.startswith("builtin://"):
            pos = collection.position_of_key(str(Path(ref).expanduser().resolve()))
        if pos is None and ref.lstrip("-").isdigit():
            i = int(ref)
            if not 0 <= i < len(collection):
                raise UserError(f"id {i} is not in {collection.path} (0..{len(collection) - 1})")
            pos = i
        if pos is None:
            raise UserError(f"{ref}: not in {collection.path} (give a key, a path or an id)")
        out.append(pos)
    return out
