"""Create-only object storage for the spool and the evidence archive: Blob Storage, or a local directory.

Objects are never overwritten: writing a name that exists raises ObjectExists. Nothing here relies on
per-blob immutability calls; the container's time-based immutability policy is the infrastructure's job.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError


class ObjectExists(Exception):
    """The object is already there; evidence and spool entries are written once."""


class ObjectMissing(Exception):
    pass


@dataclass(frozen=True)
class StoredObject:
    name: str
    size: int


class ObjectStore(Protocol):
    def put(self, name: str, data: bytes) -> None: ...
    def get(self, name: str) -> bytes: ...
    def delete(self, name: str) -> None: ...
    def list(self, prefix: str = "") -> list[StoredObject]: ...
    def location(self, name: str = "") -> str: ...


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"object name {name!r} escapes the store")
        return path

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_bytes(data)
        try:
            os.link(temporary, path)  # atomic create-only: fails if the name exists
        except FileExistsError:
            raise ObjectExists(f"{path} already exists") from None
        finally:
            temporary.unlink(missing_ok=True)

    def get(self, name: str) -> bytes:
        try:
            return self._path(name).read_bytes()
        except FileNotFoundError:
            raise ObjectMissing(f"{self.location(name)} does not exist") from None

    def delete(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[StoredObject]:
        if not self.root.exists():
            return []
        found = []
        for path in self.root.rglob("*"):
            name = path.relative_to(self.root).as_posix()
            if path.is_file() and name.startswith(prefix) and not path.name.startswith("."):
                found.append(StoredObject(name, path.stat().st_size))
        return sorted(found, key=lambda o: o.name)

    def location(self, name: str = "") -> str:
        return str(self.root / name)


class BlobStore:
    """One Blob Storage container (created if missing) through azure-storage-blob."""

    def __init__(self, container_client) -> None:
        self.container = container_client
        with contextlib.suppress(ResourceExistsError):
            self.container.create_container()

    def put(self, name: str, data: bytes) -> None:
        try:
            self.container.upload_blob(name, data, overwrite=False)
        except ResourceExistsError:
            raise ObjectExists(f"{self.location(name)} already exists") from None

    def get(self, name: str) -> bytes:
        try:
            return self.container.download_blob(name).readall()
        except ResourceNotFoundError:
            raise ObjectMissing(f"{self.location(name)} does not exist") from None

    def delete(self, name: str) -> None:
        with contextlib.suppress(ResourceNotFoundError):
            self.container.delete_blob(name)

    def list(self, prefix: str = "") -> list[StoredObject]:
        return [StoredObject(b.name, b.size) for b in self.container.list_blobs(name_starts_with=prefix or None)]

    def location(self, name: str = "") -> str:
        """The object's URL without query string: a SAS token in the connection string never leaks into
        printed or stored locations."""
        url = self.container.url.split("?", 1)[0].rstrip("/")
        return f"{url}/{name}" if name else url
