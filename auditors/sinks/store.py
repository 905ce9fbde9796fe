"""Create-only object storage for the spool and the evidence archive: Blob Storage, or a local directory.

Objects are never overwritten: writing a name that exists raises ObjectExists. Nothing here relies on
per-blob immutability calls; the container's time-based immutability policy is the infrastructure's job.

Names are checked before any storage call (`check_object_name`): relative, `/`-separated, no empty, `.` or
`..` segment, no backslash or control character. A name read back from a listing is checked the same way
before it is opened, because whoever can write the container chooses those names.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

# Blob container names: 3-63 lower-case letters, digits and single hyphens (the same rule as the settings).
CONTAINER_NAME = re.compile(r"(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*")
MAX_NAME_LENGTH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TEMPORARY = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")
# Opening the local store's files and folders one level at a time relative to their parent, never following a
# symbolic link, needs the *at() system calls; elsewhere (Windows) each level is checked with lstat first.
_RELATIVE_CALLS = {os.open, os.mkdir, os.link, os.unlink} <= os.supports_dir_fd


class ObjectExists(Exception):
    """The object is already there; evidence and spool entries are written once."""


class ObjectMissing(Exception):
    pass


class UnsafeObjectName(ValueError):
    """A name that could reach outside its folder or container, or an object reached through a symbolic link."""


def check_object_name(name: str) -> str:
    """The name unchanged when it is a safe relative object name; raises UnsafeObjectName otherwise."""
    if not isinstance(name, str) or not name:
        raise UnsafeObjectName("an object name must be a non-empty string")
    problem = None
    if len(name) > MAX_NAME_LENGTH:
        problem = f"is longer than {MAX_NAME_LENGTH} characters"
    elif name.startswith("/"):
        problem = "is absolute"
    elif "\\" in name:
        problem = "contains a backslash"
    elif _CONTROL.search(name):
        problem = "contains a control character"
    elif any(part in ("", ".", "..") for part in name.split("/")):
        problem = "has an empty, `.` or `..` segment"
    if problem:
        raise UnsafeObjectName(f"object name {name[:200]!r} {problem}")
    return name


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
    """A folder standing in for a container. Objects are regular files below the root; a symbolic link below the
    root is never followed (reading one raises UnsafeObjectName), so nothing outside the root is read or written."""

    def __init__(self, root: str | Path, *, container: str | None = None) -> None:
        if container is not None:
            if not CONTAINER_NAME.fullmatch(container):
                raise UnsafeObjectName(f"{container[:100]!r} is not a container name (3-63 lower-case letters, "
                                       "digits and single hyphens)")
            root = Path(root) / container
        self.root = Path(root)

    def _parts(self, name: str) -> list[str]:
        check_object_name(name)
        if ":" in name:  # a drive or an alternate data stream on Windows
            raise UnsafeObjectName(f"object name {name[:200]!r} contains a colon")
        return name.split("/")

    @contextlib.contextmanager
    def _folder(self, parts: list[str], *, create: bool) -> Iterator[int]:
        """A descriptor of the folder holding the object, reached one level at a time without following links."""
        if create:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except FileNotFoundError:
            raise ObjectMissing(f"{self.location('/'.join(parts))} does not exist") from None
        try:
            for part in parts[:-1]:
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=descriptor)
                try:
                    child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=descriptor)
                except FileNotFoundError:
                    raise ObjectMissing(f"{self.location('/'.join(parts))} does not exist") from None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise UnsafeObjectName(f"{self.location('/'.join(parts))}: {part} is a symbolic link or "
                                               "not a folder") from None
                    raise
                os.close(descriptor)
                descriptor = child
            yield descriptor
        finally:
            os.close(descriptor)

    def _checked_path(self, parts: list[str]) -> Path:
        """Without the *at() calls: the path, after checking that no level below the root is a symbolic link."""
        path = self.root
        for part in parts:
            path = path / part
            if path.is_symlink():
                raise UnsafeObjectName(f"{path} is a symbolic link")
        return path

    def put(self, name: str, data: bytes) -> None:
        parts = self._parts(name)
        temporary = f".{parts[-1]}.{uuid.uuid4().hex}.tmp"
        if not _RELATIVE_CALLS:
            path = self._checked_path(parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / temporary).write_bytes(data)
            try:
                os.link(path.parent / temporary, path)
            except FileExistsError:
                raise ObjectExists(f"{path} already exists") from None
            finally:
                (path.parent / temporary).unlink(missing_ok=True)
            return
        with self._folder(parts, create=True) as folder:
            handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644, dir_fd=folder)
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(data)
                os.link(temporary, parts[-1], src_dir_fd=folder, dst_dir_fd=folder)  # create-only, atomic
            except FileExistsError:
                raise ObjectExists(f"{self.location(name)} already exists") from None
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temporary, dir_fd=folder)

    def get(self, name: str) -> bytes:
        parts = self._parts(name)
        if not _RELATIVE_CALLS:
            path = self._checked_path(parts)
            try:
                return path.read_bytes()
            except FileNotFoundError:
                raise ObjectMissing(f"{self.location(name)} does not exist") from None
        with self._folder(parts, create=False) as folder:
            try:  # non-blocking: a FIFO planted in the folder must not hang the reader
                handle = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder)
            except FileNotFoundError:
                raise ObjectMissing(f"{self.location(name)} does not exist") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise UnsafeObjectName(f"{self.location(name)} is a symbolic link, not an object") from None
                raise
            with os.fdopen(handle, "rb") as file:
                if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                    raise UnsafeObjectName(f"{self.location(name)} is not a regular file")
                return file.read()

    def delete(self, name: str) -> None:
        parts = self._parts(name)
        if not _RELATIVE_CALLS:
            self._checked_path(parts).unlink(missing_ok=True)
            return
        with contextlib.suppress(ObjectMissing), self._folder(parts, create=False) as folder, \
                contextlib.suppress(FileNotFoundError):
            os.unlink(parts[-1], dir_fd=folder)

    def list(self, prefix: str = "") -> list[StoredObject]:
        """Files and symbolic links below the root (links are listed so that the archive can report them, but
        neither followed nor descended into); this store's own temporary files are left out."""
        if not self.root.exists():
            return []
        found = []
        for folder, subfolders, files in os.walk(self.root, followlinks=False):
            links = [d for d in subfolders if os.path.islink(os.path.join(folder, d))]
            for leaf in files + links:
                path = Path(folder, leaf)
                name = path.relative_to(self.root).as_posix()
                if name.startswith(prefix) and not _TEMPORARY.match(leaf):
                    found.append(StoredObject(name, path.lstat().st_size))
        return sorted(found, key=lambda o: o.name)

    def location(self, name: str = "") -> str:
        return str(self.root / name) + ("/" if name.endswith("/") else "")


class StorageUnavailable(RuntimeError):
    """Blob Storage cannot be reached (or used) at all; the message names the container and why, in one line."""


class BlobStore:
    """One Blob Storage container (created on first use if missing) through azure-storage-blob.

    If the account cannot be reached, the first call says why (StorageUnavailable) and every later call fails at
    once with the same message, so a run with storage down ends in bounded time instead of waiting out each
    object's retries."""

    def __init__(self, container_client) -> None:
        name = getattr(container_client, "container_name", None)
        if isinstance(name, str) and not CONTAINER_NAME.fullmatch(name):
            raise UnsafeObjectName(f"{name[:100]!r} is not a container name (3-63 lower-case letters, digits and "
                                   "single hyphens)")
        self.container = container_client
        self._ready = False
        self._broken = ""

    def _call(self, operation, *args, **kwargs):
        from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError

        if self._broken:
            raise StorageUnavailable(self._broken)
        try:
            if not self._ready:
                with contextlib.suppress(ResourceExistsError):
                    try:
                        self.container.create_container()
                    except HttpResponseError as exc:
                        if exc.status_code != 403:  # a credential that may not create containers may still write
                            raise
                self._ready = True
            return operation(*args, **kwargs)
        except (ResourceExistsError, ResourceNotFoundError):
            raise
        except (ServiceRequestError, ServiceResponseError) as exc:
            from auditors.sources.connection import lasting_problem

            self._broken = f"storage {self.location()}: {lasting_problem(exc) or 'cannot be reached'}"
            raise StorageUnavailable(self._broken) from None
        except HttpResponseError as exc:
            reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            if exc.status_code in (401, 403):
                raise StorageUnavailable(f"storage {self.location()}: access refused ({reason})") from None
            raise

    def put(self, name: str, data: bytes) -> None:
        check_object_name(name)
        try:
            self._call(self.container.upload_blob, name, data, overwrite=False)
        except ResourceExistsError:
            raise ObjectExists(f"{self.location(name)} already exists") from None

    def get(self, name: str) -> bytes:
        check_object_name(name)
        try:
            return self._call(lambda: self.container.download_blob(name).readall())
        except ResourceNotFoundError:
            raise ObjectMissing(f"{self.location(name)} does not exist") from None

    def delete(self, name: str) -> None:
        check_object_name(name)
        with contextlib.suppress(ResourceNotFoundError):
            self._call(self.container.delete_blob, name)

    def list(self, prefix: str = "") -> list[StoredObject]:
        return self._call(lambda: [StoredObject(b.name, b.size)
                                   for b in self.container.list_blobs(name_starts_with=prefix or None)])

    def location(self, name: str = "") -> str:
        """The object's URL without query string: a SAS token in the connection string never leaks into
        printed or stored locations."""
        url = self.container.url.split("?", 1)[0].rstrip("/")
        return f"{url}/{name}" if name else url
