"""Where experiments live: a local folder or object storage given by URI, through pyarrow.fs.

    s3://bucket/prefix                                           # endpoint and keys from AWS_* variables
    s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http   # a self-hosted S3, in the URI (pyarrow's form)

A URI's query string holds the connection options, so paths are joined *before* it (`join`): an experiment
`quick` under the second URI is `s3://bucket/prefix/quick?endpoint_override=...`, as Ray Tune's own URI
handling (`RunConfig(storage_path=...)`, `Tuner.restore`) reads it too. `open_fs` opens a URI once per
process (pyarrow's S3 client is slow to start) and turns what pyarrow cannot open into one sentence.
"""

from __future__ import annotations

import functools
import posixpath
import re
from pathlib import Path

import pyarrow
import pyarrow.fs

from hwr.errors import UserError


class StorageError(UserError, ValueError):
    """A storage path or URI that cannot be used, explained in one sentence."""


def is_uri(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    """`base`/`parts`, before a URI's query string: join("s3://b/p?scheme=http", "x") == "s3://b/p/x?scheme=http"."""
    head, sep, query = base.partition("?") if is_uri(base) else (base, "", "")
    tail = "".join("/" + p.strip("/") for p in parts if p.strip("/"))
    return (head.rstrip("/") if tail else head) + tail + sep + query


def split(path: str) -> tuple[str, str]:
    """(parent, name) of a local path or a URI, the query string kept with the parent."""
    head, sep, query = path.partition("?") if is_uri(path) else (path, "", "")
    parent, name = head.rstrip("/").rsplit("/", 1) if "/" in head.rstrip("/") else ("", head)
    return parent + sep + query, name


def name_of(path: str) -> str:
    return split(path)[1]


def shown(path: str) -> str:
    """A URI as messages show it: without a user:secret@ part (pyarrow accepts keys there)."""
    return re.sub(r"^([a-z0-9+.-]+://)[^/@?]*@", r"\1", path, flags=re.I) if is_uri(path) else path


def absolute(path: str) -> str:
    """A local path made absolute (from the current directory); a URI as it is."""
    return path if is_uri(path) else str(Path(path).resolve())


BUCKETED = ("s3", "gs", "gcs")  # their from_uri path is bucket/key


@functools.lru_cache(maxsize=16)
def _filesystem(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(uri)


def open_fs(path: str) -> tuple[pyarrow.fs.FileSystem, str]:
    """The filesystem and path of a local path or an s3://, gs://... URI; StorageError for one pyarrow cannot
    open (an unknown scheme, a misspelt option, no bucket)."""
    if not is_uri(path):
        return pyarrow.fs.LocalFileSystem(), path
    head, sep, query = path.partition("?")
    scheme, _, rest = head.partition("://")
    bucket, _, inside = rest.partition("/")
    try:
        if scheme.lower() not in BUCKETED:
            return pyarrow.fs.FileSystem.from_uri(path)
        if not bucket:
            raise ValueError("no bucket named")
        fs, _ = _filesystem(f"{scheme}://{bucket}{sep}{query}")  # one client per bucket and options
    except (pyarrow.ArrowException, ValueError, OSError) as e:
        raise StorageError(f"The storage URI {shown(path)} cannot be opened ({_reason(e)}); the form is "
                           "s3://bucket/prefix, with a self-hosted endpoint as "
                           "?endpoint_override=HOST:PORT&scheme=http or in AWS_ENDPOINT_URL.") from None
    return fs, posixpath.join(bucket, inside).rstrip("/")


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text.rstrip(".")


__all__ = ["StorageError", "absolute", "is_uri", "join", "name_of", "open_fs", "shown", "split"]
