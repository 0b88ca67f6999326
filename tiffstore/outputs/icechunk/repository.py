"""Icechunk repositories tiffstore writes: where they are, what may be read, whose they are.

A repository is a local folder or an ``s3://bucket/prefix`` (``gs://`` too), with
``storage_options`` spelled as for fsspec (``key``, ``secret``, ``token``,
``anon``, ``client_kwargs={"endpoint_url": ..., "region_name": ...}``), so the
options that reach the TIFFs reach the repository too. Its virtual chunks point at
the TIFFs through a *virtual chunk container* per location (``file:///data/``,
``s3://bucket/raw/``), kept in the repository's configuration; a reader authorizes
the container's prefix to read through it.

The marker that tiffstore wrote a repository is its root group's ``tiffstore``
attribute (:data:`MARKER`). A repository without it (another tool's, or an empty
one) is refused unless ``force``: tiffstore does not add commits to data it does
not know.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import zarr

from tiffstore.errors import OptionError, OutputError
from tiffstore.manifest.model import Manifest
from tiffstore.sources.checksums import ChecksummedSource
from tiffstore.sources.remote import FsspecSource

try:
    import icechunk
except ImportError as exc:  # an optional extra
    raise OptionError(
        "Icechunk repositories need the icechunk package: pip install 'tiffstore[icechunk]'."
    ) from exc

__all__ = [
    "MARKER",
    "Container",
    "add_containers",
    "container_for",
    "create_repository",
    "open_repository",
    "repository_storage",
    "source_container",
    "tiffstore_attributes",
]

logger = logging.getLogger(__name__)

#: The root group's attribute that says tiffstore wrote the repository, and how.
MARKER = "tiffstore"

#: Characters a container prefix may hold: Icechunk compares a container's prefix
#: with the percent-encoded location, so a prefix stops before the first segment
#: that would need encoding.
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/")


@dataclass(frozen=True)
class Container:
    """A virtual chunk container: the URL prefix it serves and how its objects are reached."""

    prefix: str
    container: icechunk.VirtualChunkContainer
    credentials: Any


def _s3_settings(storage_options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """fsspec/s3fs options -> Icechunk's ``(store settings, credentials)`` keyword arguments."""
    client = dict(storage_options.get("client_kwargs") or {})
    endpoint = storage_options.get("endpoint_url") or client.get("endpoint_url")
    region = client.get("region_name") or storage_options.get("region")
    settings: dict[str, Any] = {"region": region}
    if endpoint:
        # A custom endpoint (MinIO, moto, Ceph) takes bucket names in the path.
        settings.update(endpoint_url=endpoint, allow_http=endpoint.startswith("http://"))
        settings["force_path_style"] = True
    credentials: dict[str, Any]
    if storage_options.get("anon"):
        credentials = {"anonymous": True}
    elif storage_options.get("key") or storage_options.get("secret"):
        credentials = {
            "access_key_id": storage_options.get("key"),
            "secret_access_key": storage_options.get("secret"),
            "session_token": storage_options.get("token"),
        }
    else:
        credentials = {"from_env": True}
    return settings, credentials


def _bucket_and_prefix(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.netloc, parts.path.strip("/")


def repository_storage(repo: str, storage_options: dict[str, Any] | None = None) -> Any:
    """The Icechunk storage of ``repo``: a local path, ``s3://...`` or ``gs://...``.

    Raises
    ------
    OptionError
        For another kind of URL.
    """
    options = dict(storage_options or {})
    if repo.startswith("file://") or "://" not in repo:
        return icechunk.local_filesystem_storage(os.path.abspath(repo.removeprefix("file://")))
    scheme = repo.split("://", 1)[0]
    bucket, prefix = _bucket_and_prefix(repo)
    if scheme in ("s3", "s3a"):
        settings, credentials = _s3_settings(options)
        return icechunk.s3_storage(bucket=bucket, prefix=prefix, **settings, **credentials)
    if scheme in ("gs", "gcs"):
        token = options.get("token")
        if isinstance(token, str) and os.path.exists(token):
            return icechunk.gcs_storage(bucket=bucket, prefix=prefix, service_account_file=token)
        if token == "anon" or options.get("anon"):
            return icechunk.gcs_storage(bucket=bucket, prefix=prefix, anonymous=True)
        return icechunk.gcs_storage(bucket=bucket, prefix=prefix, from_env=True)
    raise OptionError(
        f"{repo}: an Icechunk repository is a local folder, s3://bucket/prefix or "
        "gs://bucket/prefix; give one of those."
    )


def _container_prefix(prefix: str) -> str:
    """``prefix`` cut before its first path segment that is not URL-safe as it is."""
    scheme, rest = prefix.split("://", 1)
    host, _, path = rest.partition("/")
    kept = ""
    for segment in path.split("/")[:-1]:
        if not set(segment) <= _SAFE:
            break
        kept += segment + "/"
    return f"{scheme}://{host}/{kept}"


def container_for(prefix: str, storage_options: dict[str, Any] | None = None) -> Container:
    """The virtual chunk container for locations under ``prefix`` (a URL ending in ``/``).

    ``storage_options`` (fsspec's, as for the TIFFs) give an S3 container its
    endpoint and region, and the credentials to read through it here.

    Raises
    ------
    OptionError
        For locations Icechunk cannot read (only ``file://``, ``s3://``, ``gs://``,
        ``http(s)://``).
    """
    options = dict(storage_options or {})
    url_prefix = _container_prefix(prefix)
    scheme = url_prefix.split("://", 1)[0]
    store: Any
    credentials: Any = None
    if scheme == "file":
        store = icechunk.local_filesystem_store(unquote(urlsplit(url_prefix).path))
    elif scheme in ("s3", "s3a"):
        settings, creds = _s3_settings(options)
        store = icechunk.s3_store(**settings, s3_compatible="endpoint_url" in settings)
        credentials = icechunk.s3_credentials(**creds)
    elif scheme in ("gs", "gcs"):
        store = icechunk.gcs_store()
        credentials = icechunk.gcs_credentials(from_env=True)
    elif scheme in ("http", "https"):
        store = icechunk.http_store()
    else:
        raise OptionError(
            f"{prefix}: Icechunk reads virtual chunks from file://, s3://, gs:// or "
            "http(s):// locations only; copy the TIFFs to one of those and pass url=."
        )
    return Container(url_prefix, icechunk.VirtualChunkContainer(url_prefix, store), credentials)


def source_container(m: Manifest, prefix: str, url: str | None) -> Container:
    """The virtual chunk container for ``prefix``: reached with the source's own options
    (endpoint, region, credentials) when the TIFFs are read where they are."""
    source = m.source.inner if isinstance(m.source, ChecksummedSource) else m.source
    options = source.storage_options if url is None and isinstance(source, FsspecSource) else {}
    return container_for(prefix, options)


def _authorized(containers: list[Container]) -> Any:
    return icechunk.containers_credentials({c.prefix: c.credentials for c in containers})


def create_repository(
    repo: str, storage_options: dict[str, Any] | None, containers: list[Container]
) -> icechunk.Repository:
    """A new, empty repository at ``repo`` whose configuration holds ``containers``.

    Raises
    ------
    OutputError
        When a local ``repo`` is a file or a folder with something in it.
    """
    if "://" not in repo or repo.startswith("file://"):
        path = repo.removeprefix("file://")
        if os.path.isfile(path) or (os.path.isdir(path) and os.listdir(path)):
            raise OutputError(
                f"{repo}: exists and is not an Icechunk repository; tiffstore does not write "
                "into it. Give a new folder."
            )
    config = icechunk.RepositoryConfig.default()
    for c in containers:
        config.set_virtual_chunk_container(c.container)
    storage = repository_storage(repo, storage_options)
    try:
        return icechunk.Repository.create(storage, config, _authorized(containers))
    except icechunk.IcechunkError as exc:
        raise OutputError(f"{repo}: cannot create an Icechunk repository there ({exc}).") from exc


def open_repository(
    repo: str, storage_options: dict[str, Any] | None
) -> icechunk.Repository | None:
    """The repository at ``repo``, or ``None`` when there is none."""
    storage = repository_storage(repo, storage_options)
    try:
        if not icechunk.Repository.exists(storage):
            return None
        return icechunk.Repository.open(storage)
    except icechunk.IcechunkError as exc:
        raise OutputError(f"{repo}: cannot open the Icechunk repository ({exc}).") from exc


def add_containers(
    repository: icechunk.Repository, containers: list[Container]
) -> icechunk.Repository:
    """``repository`` with ``containers`` in its configuration (saved where it lacked one)."""
    known = repository.config.virtual_chunk_containers or {}
    missing = [c for c in containers if c.prefix not in known]
    if not missing:
        return repository
    config = repository.config
    for c in missing:
        config.set_virtual_chunk_container(c.container)
    logger.info("adding virtual chunk containers %s", [c.prefix for c in missing])
    repository = icechunk.Repository.open(repository.storage, config)
    repository.save_config()
    return repository


def tiffstore_attributes(repository: icechunk.Repository, branch: str) -> dict[str, Any] | None:
    """The marker of the branch's root group (:data:`MARKER`), or ``None`` if it has none."""
    session = repository.readonly_session(branch=branch)
    try:
        group = zarr.open_group(session.store, mode="r", zarr_format=3)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError):
        return None
    marker = group.attrs.get(MARKER)
    return dict(marker) if isinstance(marker, dict) and "repository" in marker else None
