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
    "Facet",
    "Facets",
    "Filter",
    "DuplicateItem",
    "Duplicates",
    "JobReport",
    "Job",
    "Folders",
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


class Filter(BaseModel):
    label: str | None  # only images with this label
    folder: str | None  # only images under this folder (relative to the collection's folder)


class SearchResult(BaseModel):
    query: Query
    mode: str  # "index" (the collection's FAISS index), "exact" or "cluster"
    rerank: bool = False  # re-ranked without labels (DBA + alpha-QE; index and exact mode)
    k: int
    filter: Filter
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
    can_add: bool  # images may be added and removed from the pages (--allow-add)
    rerank_default: bool  # searches re-rank unless told not to (a pretrained model)
    limits: Limits


class Problem(BaseModel):
    detail: str  # what was wrong, in words


class Facet(BaseModel):
    name: str
    count: int  # images


class Facets(BaseModel):
    labels: list[Facet]
    folders: list[Facet]  # every folder level, relative to the collection's folder


class DuplicateItem(Item):
    score: float  # its highest similarity to another image of the group


class Duplicates(BaseModel):
    threshold: float
    total: int  # groups
    pairs: int  # pairs of images at or above the threshold
    offset: int
    groups: list[list[DuplicateItem]]  # biggest group first


class JobReport(BaseModel):
    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    count: int = 0  # images in the collection after the job
    failed: list[list[str]] = []  # [name, reason] of files that could not be added


class Job(BaseModel):
    id: int
    kind: str  # "add" or "remove"
    what: str
    state: str  # queued, running, done, failed
    message: str  # why it failed
    total: int  # files (or images) of the job
    done: int  # of them committed so far
    seconds: float
    report: JobReport
    new_ids: list[int]  # ids of the images added (when done)


class Folders(BaseModel):
    root: str  # the folder given to --allow-add
    folders: list[str]  # relative to it; "" is the folder itself
