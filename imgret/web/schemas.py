"""The JSON shapes of the API (they make the OpenAPI schema at /openapi.json)."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = [
    "Item",
    "Hit",
    "Query",
    "SearchResult",
    "ItemPage",
    "ClusterStrip",
    "ClusterPage",
    "ClusterItems",
    "ModelInfo",
    "Limits",
    "Info",
    "Problem",
]


class Item(BaseModel):
    id: int  # row of the collection
    name: str  # path relative to the collection's source folder, or the built-in key
    label: str | None  # sub-folder name
    cluster: int | None
    thumb: str  # URL of the thumbnail
    image: str  # URL of the full image


class Hit(Item):
    rank: int  # 1 = best
    score: float  # cosine similarity (or negative squared L2 distance)


class Query(BaseModel):
    kind: str  # "upload" or "item"
    name: str
    item: Item | None  # the collection image searched for (kind "item")


class SearchResult(BaseModel):
    query: Query
    mode: str  # "exact" or "cluster"
    rerank: bool = False  # re-ranked without labels (DBA + alpha-QE; exact mode only)
    k: int
    cluster: int | None  # the query's cluster in cluster mode
    took_ms: float  # embedding + ranking, in the server
    hits: list[Hit]


class ItemPage(BaseModel):
    total: int
    offset: int
    items: list[Item]


class ClusterStrip(BaseModel):
    cluster: int
    size: int
    samples: list[Item]  # the images nearest the cluster's centroid


class ClusterPage(BaseModel):
    total: int  # K
    offset: int
    clusters: list[ClusterStrip]


class ClusterItems(BaseModel):
    cluster: int
    total: int  # images in the cluster
    offset: int
    items: list[Item]  # most central first


class ModelInfo(BaseModel):
    ref: str | None
    name: str | None
    embedding_dim: int | None
    image_size: int | None
    channels: int | None


class Limits(BaseModel):
    max_k: int
    max_page: int
    max_upload_bytes: int


class Info(BaseModel):
    name: str
    count: int
    dim: int
    metric: str
    index: str
    model: ModelInfo
    source: str
    skipped: int  # files that could not be decoded when the collection was made
    clustered: bool
    k: int | None
    elbow_k: int | None
    modes: list[str]
    plots: dict[str, str]  # plot name -> URL, for the plots that exist
    limits: Limits


class Problem(BaseModel):
    detail: str  # what was wrong, in words
