"""One contract suite, run against every artifact store backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from bcd.errors import NotFoundError
from bcd.storage import BaseArtifactStore, FsspecArtifactStore


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BaseArtifactStore:
    if request.param == "local":
        return FsspecArtifactStore(str(tmp_path / "store"))
    endpoint = request.getfixturevalue("moto_endpoint")
    request.getfixturevalue("s3_credentials")
    import s3fs

    bucket = f"bcd-{tmp_path.name.lower().replace('_', '-')[-40:]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir(bucket)
    s3fs.S3FileSystem.clear_instance_cache()
    return FsspecArtifactStore(f"s3://{bucket}/root", {"client_kwargs": {"endpoint_url": endpoint}})


def test_write_then_read_bytes(store: BaseArtifactStore) -> None:
    store.write_bytes("a/b/file.bin", b"payload")
    assert store.exists("a/b/file.bin")
    assert store.read_bytes("a/b/file.bin") == b"payload"


def test_missing_key_raises_not_found(store: BaseArtifactStore) -> None:
    assert not store.exists("nope.bin")
    with pytest.raises(NotFoundError):
        store.read_bytes("nope.bin")


def test_put_and_get_dir_round_trip(store: BaseArtifactStore, tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "model.json").write_text('{"a": 1}')
    (source / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    store.put_dir(source, "jobs/one/model")
    assert store.list("jobs/one") == ["jobs/one/model/model.json", "jobs/one/model/sub/weights.bin"]
    copy = store.get_dir("jobs/one/model", tmp_path / "copy")
    assert (copy / "sub" / "weights.bin").read_bytes() == b"\x00\x01"


def test_put_dir_replaces_previous_content(store: BaseArtifactStore, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "old.txt").write_text("old")
    (second / "new.txt").write_text("new")
    store.put_dir(first, "folder")
    store.put_dir(second, "folder")
    assert store.list("folder") == ["folder/new.txt"]


def test_delete_removes_folder_and_ignores_missing(store: BaseArtifactStore) -> None:
    store.write_bytes("gone/x.txt", b"x")
    store.delete("gone")
    assert not store.exists("gone/x.txt")
    store.delete("never-existed")


def test_get_dir_of_missing_key_raises(store: BaseArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        store.get_dir("missing", tmp_path / "out")


def test_parent_traversal_is_refused(tmp_path: Path) -> None:
    store = FsspecArtifactStore(str(tmp_path / "store"))
    with pytest.raises(NotFoundError):
        store.read_bytes("../outside.txt")
