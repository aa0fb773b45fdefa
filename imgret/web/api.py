"""The JSON API of the pages: search, browse, clusters, duplicates, images, plots.

Every answer to bad input is 4xx with {"detail": message}; the schema is at /openapi.json.
"""

# No `from __future__ import annotations`: FastAPI reads the annotations of the route
# functions, whose types (K, Offset, Limit, ...) are local to add_api.
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Query, UploadFile
from fastapi.responses import FileResponse, Response
from starlette.concurrency import run_in_threadpool

from . import schemas
from .config import DEFAULT_K, WebConfig
from .errors import WebError
from .files import ImageBlob
from .service import PLOTS, CollectionService
from .uploads import decode_upload

__all__ = ["add_api", "ERRORS"]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": schemas.Problem} for code in (400, 401, 403, 404, 413, 415)
}
Mode = Literal["index", "exact", "cluster"]


def blob_response(blob: ImageBlob, max_age: int) -> Response:
    headers = {"cache-control": f"private, max-age={max_age}"}
    if blob.path is not None:
        return FileResponse(blob.path, media_type=blob.media_type, headers=headers)
    return Response(blob.data, media_type=blob.media_type, headers=headers)


def add_api(app: FastAPI, service: CollectionService, config: WebConfig) -> None:
    K = Annotated[int, Query(ge=1, le=config.max_k, description="number of results")]
    Offset = Annotated[int, Query(ge=0, description="first entry of the page")]
    Limit = Annotated[int, Query(ge=1, le=config.max_page, description="entries per page")]
    Label = Annotated[str | None, Query(max_length=500, description="only images with this label")]
    Folder = Annotated[
        str | None, Query(max_length=1000, description="only images under this folder")
    ]

    @app.get("/api/info", response_model=schemas.Info, responses=ERRORS, tags=["collection"])
    def info() -> dict:
        """Size, model, index, clustering and the plots that exist."""
        return service.info()

    @app.get("/api/items", response_model=schemas.ItemPage, responses=ERRORS, tags=["collection"])
    def items(offset: Offset = 0, limit: Limit = 60, label: Label = None,
              folder: Folder = None) -> dict:  # fmt: skip
        """A page of the collection's images (of a label or folder only), in stored order."""
        return service.items(offset, limit, label, folder)

    @app.get(
        "/api/items/{item_id}", response_model=schemas.Item, responses=ERRORS, tags=["collection"]
    )
    def item(item_id: int) -> dict:
        """One image of the collection."""
        return service.item(item_id)

    @app.get("/api/facets", response_model=schemas.Facets, responses=ERRORS, tags=["collection"])
    def facets() -> dict:
        """The labels and folders of the collection, with their image counts (for filters)."""
        return service.facets()

    @app.post(
        "/api/search", response_model=schemas.SearchResult, responses=ERRORS, tags=["search"]
    )
    async def search_upload(
        file: Annotated[UploadFile, File(description="the query image (JPEG, PNG, ...)")],
        k: Annotated[int, Form(ge=1, le=config.max_k)] = DEFAULT_K,
        mode: Annotated[Mode, Form()] = "index",
        rerank: Annotated[bool | None, Form()] = None,
        label: Annotated[str | None, Form(max_length=500)] = None,
        folder: Annotated[str | None, Form(max_length=1000)] = None,
    ) -> dict:
        """Rank the collection for an uploaded image: with its FAISS index (`index`), every
        image (`exact`), or inside the query's cluster (`cluster`); `rerank`: label-free
        re-ranking (DBA + alpha query expansion; index and exact mode; by default on for a
        model built on a pretrained backbone or trained on a large collection, see
        /api/info); `label`, `folder`: rank only
        those images."""
        data = await file.read(config.max_upload_bytes + 1)
        name = Path(file.filename or "upload").name
        size = service.embedder.image_size

        def decode() -> Any:
            return decode_upload(data, max_bytes=config.max_upload_bytes,
                                 max_pixels=config.max_pixels, name=name, target=size)  # fmt: skip

        return await run_in_threadpool(
            service.search_image, decode, name, k, mode, rerank=service.rerank_for(rerank, mode),
            label=label or None, folder=folder or None,
        )  # fmt: skip

    @app.get(
        "/api/search/{item_id}",
        response_model=schemas.SearchResult,
        responses=ERRORS,
        tags=["search"],
    )
    async def search_item(item_id: int, k: K = DEFAULT_K, mode: Mode = "index",
                          rerank: bool | None = None, label: Label = None,
                          folder: Folder = None) -> dict:  # fmt: skip
        """More like this: rank the collection for one of its images (left out of the hits;
        the other parameters as for an upload)."""
        label, folder = label or None, folder or None
        rerank = service.rerank_for(rerank, mode)
        if service.in_thread(rerank, label, folder):
            return await run_in_threadpool(service.search_item, item_id, k, mode, rerank=rerank,
                                           label=label, folder=folder)  # fmt: skip
        return await service.search_item_async(item_id, k, mode)

    @app.get(
        "/api/clusters", response_model=schemas.ClusterPage, responses=ERRORS, tags=["collection"]
    )
    def clusters(offset: Offset = 0, limit: Limit = 60) -> dict:
        """A page of clusters: size and the images nearest each centroid."""
        return service.clusters(offset, limit)

    @app.get(
        "/api/clusters/{cluster}",
        response_model=schemas.ClusterItems,
        responses=ERRORS,
        tags=["collection"],
    )
    def cluster(cluster: int, offset: Offset = 0, limit: Limit = 60) -> dict:
        """A page of one cluster's images, most central first."""
        return service.cluster(cluster, offset, limit)

    @app.get(
        "/api/duplicates", response_model=schemas.Duplicates, responses=ERRORS, tags=["collection"]
    )
    def duplicates(
        threshold: Annotated[float, Query(ge=0.5, le=1.0)] = config.duplicate_threshold,
        offset: Offset = 0, limit: Limit = 50,
    ) -> dict:  # fmt: skip
        """Groups of near-duplicate images (similarity >= threshold, as `imgret duplicates`
        finds them: each image's 10 nearest neighbours), biggest group first."""
        return service.duplicates(threshold, offset, limit)

    Version = Annotated[
        str | None, Query(max_length=16, description="the version in the item's URL")
    ]
    image_responses: dict[int | str, dict[str, Any]] = {**ERRORS, 200: {"content": {"image/*": {}}}}

    @app.get(
        "/api/thumbs/{item_id}", response_class=Response, responses=image_responses, tags=["images"]
    )
    def thumb(item_id: int, v: Version = None) -> Response:
        """The thumbnail of an image, made on first request and cached."""
        return blob_response(service.files.thumbnail(service.key(item_id, v)), 86400)

    @app.get(
        "/api/images/{item_id}", response_class=Response, responses=image_responses, tags=["images"]
    )
    def image(item_id: int, v: Version = None) -> Response:
        """The full image: only a file of the collection (see imgret/web/files.py)."""
        return blob_response(service.files.full_image(service.key(item_id, v)), 3600)

    @app.get(
        "/api/plots/{name}", response_class=Response, responses=image_responses, tags=["images"]
    )
    def plot(name: Literal[PLOTS]) -> Response:  # type: ignore[valid-type]
        """A plot of the collection (elbow, clusters) or of its model (loss, reconstructions)."""
        path = service.plot_path(name)
        if path is None:
            raise WebError(404, f"no {name} plot for this collection")
        return blob_response(ImageBlob("image/png", path=path), 60)
