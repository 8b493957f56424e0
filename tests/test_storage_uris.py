"""Storage URIs carrying their options in the query, secrets masked in every output, and
``serve --storage``/``--fallback-storage`` with such URIs as a real process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gridfs
import pytest
import requests

from gridserve.config import ALL_SETTINGS, masked, render_toml, resolve_settings
from gridserve.storage import (
    GridFSStorage,
    LocalStorage,
    StorageURIError,
    from_uri,
    mask_text,
    mask_uri,
)
from gridserve.storage.s3 import S3Storage
from tests.dbserver import free_port
from tests.migration import SyncDB
from tests.test_cli import wait_for_http


async def test_mongodb_uri_names_its_bucket_in_the_query() -> None:
    storage = from_uri("mongodb://127.0.0.1:1/media?bucket=video&serverSelectionTimeoutMS=200")
    assert isinstance(storage, GridFSStorage)
    assert storage.description == "GridFS media.video"
    await storage.close()
    plain = from_uri("mongodb://127.0.0.1:1/media", bucket="fs2")
    assert plain.description == "GridFS media.fs2"
    await plain.close()
    with pytest.raises(StorageURIError):
        from_uri("mongodb://127.0.0.1:1/media?bucket=")


async def test_s3_uri_carries_endpoint_region_and_credentials() -> None:
    storage = from_uri(
        "s3://AKIA%2Fx:s%2Fcr3t@media/v1/clips?endpoint=http://127.0.0.1:9&region=eu-west-1",
        endpoint_url="http://ignored:1",
    )
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix) == ("media", "v1/clips/")
    options = storage._client_options
    assert options["endpoint_url"] == "http://127.0.0.1:9"  # the URI wins over the setting
    assert options["region_name"] == "eu-west-1"
    assert (options["aws_access_key_id"], options["aws_secret_access_key"]) == ("AKIA/x", "s/cr3t")
    assert "s/cr3t" not in storage.description
    await storage.close()


@pytest.mark.parametrize(
    "uri",
    [
        "s3://media?endpoint=http://x&colour=red",
        "s3://KEYONLY@media/p",
        "s3:///p",
        "s3://b/p?endpoint",
        "ftp://host/x",
    ],
)
def test_bad_uris_are_usage_errors_that_show_no_secret(uri: str) -> None:
    with pytest.raises(StorageURIError) as caught:
        from_uri(uri)
    assert "KEYONLY" not in str(caught.value)


def test_local_uris(tmp_path: Path) -> None:
    for uri in (str(tmp_path / "a"), f"file:{tmp_path / 'b'}", f"file://{tmp_path / 'c'}"):
        assert isinstance(from_uri(uri), LocalStorage)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://u:pw@h1:1,h2:2/db?replicaSet=r", "mongodb://u:***@h1:1,h2:2/db?replicaSet=r"),
        ("s3://AK:SECRET@b/p?endpoint=http://e:1", "s3://AK:***@b/p?endpoint=http://e:1"),
        (
            "mongodb://h/db?tlsCertificateKeyFilePassword=pw&bucket=fs",
            "mongodb://h/db?tlsCertificateKeyFilePassword=***&bucket=fs",
        ),
        ("s3://b/p?endpoint=http://e:1&region=r", "s3://b/p?endpoint=http://e:1&region=r"),
        ("/srv/media", "/srv/media"),
    ],
)
def test_mask_uri(uri: str, shown: str) -> None:
    assert mask_uri(uri) == shown


def test_mask_text_hides_the_password_wherever_it_appears() -> None:
    uri = "mongodb://ann:hunter2%21@h/db"
    assert mask_text("auth failed for hunter2! on h", uri) == "auth failed for *** on h"


def test_fallback_storage_from_flags_env_and_file(tmp_path: Path) -> None:
    config = tmp_path / "g.toml"
    config.write_text('[gridserve]\nfallback_storage = ["/srv/old", "mongodb://u:pw@h/db"]\n')
    flags: dict[str, Any] = {"fallback_storage": ["s3://K:S3CRET@b/p", "/srv/x"]}
    values = resolve_settings(ALL_SETTINGS, flags, {}, None)
    assert values["fallback_storage"] == ("s3://K:S3CRET@b/p", "/srv/x")
    values = resolve_settings(ALL_SETTINGS, {}, {"GRIDSERVE_FALLBACK_STORAGE": "/a  /b"}, None)
    assert values["fallback_storage"] == ("/a", "/b")
    values = resolve_settings(ALL_SETTINGS, {}, {}, config)
    assert values["fallback_storage"] == ("/srv/old", "mongodb://u:pw@h/db")
    rendered = render_toml(masked(values))
    assert 'fallback_storage = ["/srv/old", "mongodb://u:***@h/db"]' in rendered
    assert resolve_settings(ALL_SETTINGS, {}, {}, None)["fallback_storage"] == ()


def test_print_config_masks_fallback_secrets() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "gridserve.cli",
            "serve",
            "--fallback-storage",
            "s3://KEY:TOPSECRET@b/p?endpoint=http://e:1",
            "--fallback-storage",
            "/srv/old",
            "--print-config",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "TOPSECRET" not in result.stdout
    assert 'fallback_storage = ["s3://KEY:***@b/p?endpoint=http://e:1", "/srv/old"]' in (
        result.stdout
    )


@pytest.fixture
def daemon(
    mongo_uri: str, db_name: str, sync_db: SyncDB, tmp_path: Path
) -> Iterator[tuple[int, Any]]:
    gridfs.GridFSBucket(sync_db, "old").upload_from_stream("old/clip.webm", b"from gridfs")
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "fresh.txt").write_bytes(b"from disk")
    port = free_port()
    fallback = f"{mongo_uri.rstrip('/')}/{db_name}?bucket=old"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gridserve.cli",
            "serve",
            "--storage",
            f"file:{tmp_path / 'new'}",
            "--fallback-storage",
            fallback,
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
    yield port, process
    process.terminate()
    process.communicate(timeout=30)


def test_serve_with_a_fallback_storage(daemon: tuple[int, Any]) -> None:
    port, _ = daemon
    base = f"http://127.0.0.1:{port}"
    assert requests.get(f"{base}/fs/old/clip.webm", timeout=10).content == b"from gridfs"
    assert requests.get(f"{base}/fs/fresh.txt", timeout=10).content == b"from disk"
    listing = requests.get(f"{base}/fs/", timeout=10).json()
    assert [f["filename"] for f in listing["files"]] == ["fresh.txt", "old/clip.webm"]
    ready = requests.get(f"{base}/readyz", timeout=10)
    assert ready.status_code == 200
    assert ready.text.splitlines()[1].endswith(".old: ready")
