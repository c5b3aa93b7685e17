"""One place that maps store locations (local paths or s3:// URIs) to filesystems.

Single files are written atomically (temp name + rename locally; S3 PUTs are atomic by
themselves); artifacts are directories committed by a marker file written last, and
`store_layout` says where each lives and which marker commits it.
"""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs


def is_remote(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def resolve(location: str) -> str:
    """Absolute local path, or the URI unchanged; Ray workers on other nodes see the same."""
    if is_remote(location):
        return location.rstrip("/")
    return str(Path(location.removeprefix("file://")).expanduser().resolve())


def filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or URI."""
    location = resolve(location)
    if is_remote(location):
        return pafs.FileSystem.from_uri(location)
    return pafs.LocalFileSystem(), location


class StoreError(RuntimeError):
    """A store cannot be used; the message is one line naming the URI."""


def check_reachable(location: str) -> None:
    """Fail fast, before any Ray work, when a store cannot be used: a local directory that
    cannot be created or written; an s3:// store with no credentials, a wrong endpoint, a
    missing bucket or denied access. Endpoint, region and credentials come from the standard
    AWS environment variables and profiles (AWS_ENDPOINT_URL for S3-compatible stores)."""
    if not is_remote(location):
        check_writable(resolve(location))
        return
    if not location.startswith("s3://"):
        return
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    bucket = location.removeprefix("s3://").split("/", 1)[0]
    client = boto3.client("s3", config=Config(retries={"max_attempts": 1}, connect_timeout=5))
    try:
        client.head_bucket(Bucket=bucket)
    except NoCredentialsError:
        raise StoreError(f"store {location}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role)") from None
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        reason = {"404": f"bucket {bucket!r} does not exist",
                  "NoSuchBucket": f"bucket {bucket!r} does not exist",
                  "403": f"access to bucket {bucket!r} denied"}.get(code, str(err))
        raise StoreError(f"store {location}: {reason}") from None
    except BotoCoreError as err:  # unreachable endpoint, bad URL, ...
        raise StoreError(f"store {location}: {err} (endpoint {client.meta.endpoint_url})"
                         ) from None


def check_writable(path: str) -> None:
    """Create the local store directory `path` if need be and write a file in it; a store
    that cannot take either fails here, naming the path, and not after a stage's work."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write-check-{uuid.uuid4().hex}")
        with open(probe, "wb"):
            pass
        os.remove(probe)
    except OSError as err:
        raise StoreError(f"store {path}: cannot be written ({err.strerror or err})") from None


def read_location(location: str) -> bytes:
    """The bytes of one file given as a local path or URI."""
    fs, path = filesystem(location)
    with fs.open_input_stream(path) as f:
        return f.read()


def path_exists(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def file_listing(location: str) -> list[tuple[str, int, int]]:
    """(path, size in bytes, modification time in ns) of the file at `location`, or of every
    file under it, in path order: what identifies a table without reading it."""
    fs, path = filesystem(location)
    info = fs.get_file_info(path)
    found = ([info] if info.is_file else
             fs.get_file_info(pafs.FileSelector(path, recursive=True)))
    return sorted((f.path, f.size, f.mtime_ns or 0) for f in found if f.is_file)


class Store:
    """The artifact root from the spec's `store`."""

    def __init__(self, root: str):
        self.root = resolve(root)
        self.fs, self._root_path = filesystem(self.root)

    def uri(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def fs_path(self, *parts: str) -> str:
        return "/".join([self._root_path, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.fs_path(*parts)).type != pafs.FileType.NotFound

    def listdir(self, *parts: str) -> list[str]:
        selector = pafs.FileSelector(self.fs_path(*parts), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.fs_path(*parts)) as f:
            return f.read()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        target = self.fs_path(*parts)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if is_remote(self.root):
            with self.fs.open_output_stream(target) as f:
                f.write(data)
            return
        tmp = f"{target}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)

    def read_json(self, *parts: str) -> Any:
        return json.loads(self.read_bytes(*parts))

    def write_json(self, obj: Any, *parts: str) -> None:
        self.write_bytes(json.dumps(obj, indent=2, sort_keys=True, default=str).encode(), *parts)

    def remove_dir(self, *parts: str) -> None:
        if self.exists(*parts):
            self.fs.delete_dir(self.fs_path(*parts))
