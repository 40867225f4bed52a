"""Input channels: from a URI to a local folder the job reads (``SM_CHANNEL_<NAME>``).

A channel URI is one of:

- ``dataset://NAME/SPLIT``: a packed split of an imported dataset;
- a local path or ``file://`` URL of a folder (used in place, read-only);
- any other fsspec URL (``s3://bucket/prefix``): copied into the job's
  ``input/data/<channel>`` folder before training starts ("File" mode).
"""

from __future__ import annotations

import logging
from pathlib import Path

from bcd.config import Settings
from bcd.errors import InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)

DATASET_SCHEME = "dataset://"


def _dataset_split_folder(uri: str, settings: Settings) -> str:
    """The local folder of the packed split named by ``dataset://NAME/SPLIT``."""
    from bcd.data import open_channel

    split = open_channel(uri, settings)
    if split.path is None:
        raise InvalidInputError(f"channel {uri!r} is not a packed split folder")
    if len(split) == 0:
        raise InvalidInputError(f"channel {uri!r} holds no patches; split the dataset again")
    return str(split.path)


def _local_folder(uri: str) -> Path | None:
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" not in uri:
        return Path(uri).expanduser()
    return None


def check_channel(channel_name: str, uri: str, settings: Settings) -> None:
    """Fail early when a channel's data is missing or empty.

    Raises:
        NotFoundError: Unknown dataset or split, or no folder at the URI.
        InvalidInputError: A malformed URI or an empty folder.
    """
    if uri.startswith(DATASET_SCHEME):
        uri = _dataset_split_folder(uri, settings)
    local = _local_folder(uri)
    if local is not None:
        if not local.is_dir():
            raise NotFoundError(
                f"channel {channel_name!r}: no folder at {str(local)!r}; give an existing "
                "folder, a dataset://NAME/SPLIT URI or an fsspec URL"
            )
        if not any(local.iterdir()):
            raise InvalidInputError(f"channel {channel_name!r}: the folder {str(local)!r} is empty")
        return
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(uri, **settings.storage_options())
    except (ImportError, ValueError) as error:
        raise InvalidInputError(f"channel {channel_name!r}: cannot open {uri!r}: {error}") from None
    if not fs.exists(path):
        raise NotFoundError(f"channel {channel_name!r}: nothing at {uri!r}")
    if not fs.find(path):
        raise InvalidInputError(f"channel {channel_name!r}: {uri!r} holds no files")


def materialize_channel(channel_name: str, uri: str, destination: Path, settings: Settings) -> Path:
    """A local folder holding the channel's data (downloaded into ``destination`` if remote).

    Args:
        channel_name: For messages.
        uri: The channel URI.
        destination: Where remote data is copied (``input/data/<channel>``).
        settings: For dataset and storage locations.

    Returns:
        The local folder to hand the job.

    Raises:
        NotFoundError: The data is gone.
    """
    if uri.startswith(DATASET_SCHEME):
        uri = _dataset_split_folder(uri, settings)
    local = _local_folder(uri)
    if local is not None:
        if not local.is_dir():
            raise NotFoundError(f"channel {channel_name!r}: no folder at {str(local)!r}")
        return local.resolve()
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri, **settings.storage_options())
    destination.mkdir(parents=True, exist_ok=True)
    prefix = path.rstrip("/") + "/"
    files = fs.find(path)
    if not files:
        raise NotFoundError(f"channel {channel_name!r}: nothing at {uri!r}")
    for item in files:
        relative = str(item)[len(prefix) :] if str(item).startswith(prefix) else Path(item).name
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(item, str(target))
    logger.info("channel %s: copied %d files", channel_name, len(files))
    return destination
