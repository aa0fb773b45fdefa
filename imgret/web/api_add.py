"""The API of the add page (only with `imgret serve --allow-add DIR`): add, remove, progress."""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations.
from typing import Annotated

from fastapi import Body, FastAPI, File, UploadFile

from . import schemas
from .adding import AddJobs
from .api import ERRORS
from .config import WebConfig
from .errors import WebError

__all__ = ["add_jobs_api", "ADD_UPLOAD_PATH"]

ADD_UPLOAD_PATH = "/api/add/files"


def add_jobs_api(app: FastAPI, jobs: AddJobs, config: WebConfig) -> None:
    @app.get("/api/add/folders", response_model=schemas.Folders, responses=ERRORS, tags=["add"])
    def folders() -> dict:
        """Folders under the allowed root that may be added."""
        return {"root": str(jobs.root), "folders": jobs.folders()}

    @app.post(ADD_UPLOAD_PATH, response_model=schemas.Job, responses=ERRORS, tags=["add"])
    async def add_files(
        files: Annotated[list[UploadFile], File(description="image files to add")],
    ) -> dict:
        """Add uploaded image files (kept in the collection's uploads/ folder); returns the
        job, whose progress is at /api/jobs/{id}."""
        if len(files) > config.max_add_files:
            raise WebError(413, f"{len(files):,} files; at most {config.max_add_files:,} at once")
        data = [(f.filename or "image", await f.read()) for f in files]
        return jobs.describe(jobs.add_uploads(data))

    @app.post("/api/add/folder", response_model=schemas.Job, responses=ERRORS, tags=["add"])
    def add_folder(folder: Annotated[str, Body(embed=True, max_length=1000)]) -> dict:
        """Add the images of a folder under the allowed root (`folder` relative to it)."""
        return jobs.describe(jobs.add_folder(folder))

    @app.post("/api/remove", response_model=schemas.Job, responses=ERRORS, tags=["add"])
    def remove(ids: Annotated[list[int], Body(embed=True, max_length=10_000)]) -> dict:
        """Drop images from the collection (their files stay where they are)."""
        return jobs.describe(jobs.remove(ids))

    @app.get("/api/jobs/{job_id}", response_model=schemas.Job, responses=ERRORS, tags=["add"])
    def job(job_id: int) -> dict:
        """An add or remove job: state, files done of total, and the new images' ids."""
        return jobs.status(job_id)
