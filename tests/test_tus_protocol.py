"""tus 1.0.0 over real HTTP (gridserve.handlers.tus): the core, the extensions, expiry, and
every refusal the protocol answers, and what a finished upload becomes; on every storage that
takes resumable uploads (the others are skipped). Owners, the ACL, CORS and concurrency:
test_tus_access.py."""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from gridserve.acl import default_acl
from gridserve.media.service import MediaService
from gridserve.uploads import UploadPolicy
from tests.livehttp import LiveServer
from tests.mediafiles import media_dir
from tests.tuslive import (
    ALICE,
    MP4,
    OCTETS,
    TUS,
    b64,
    backend,
    create,
    created,
    head,
    left,
    listed,
    metadata,
    patch,
    server,
    start,
    stored,
    users,
)

__all__ = ["backend", "left", "media_dir", "server", "start", "users"]


# -- core, creation, completion ---------------------------------------------------------------


def test_options_advertise_the_protocol(start: Callable[..., LiveServer]) -> None:
    server = start(upload_policy=UploadPolicy(max_size=1 << 30))
    answer = requests.options(server.url("/fs/.uploads/"), timeout=30)
    assert answer.status_code == 204
    assert answer.headers["Tus-Version"] == "1.0.0"
    assert answer.headers["Tus-Max-Size"] == str(1 << 30)
    extensions = set(answer.headers["Tus-Extension"].split(","))
    assert {"creation", "creation-with-upload", "creation-defer-length"} <= extensions
    assert {"termination", "expiration", "checksum"} <= extensions
    assert {"sha1", "sha256"} <= set(answer.headers["Tus-Checksum-Algorithm"].split(","))


def test_upload_in_two_patches_becomes_a_file_that_plays_with_ranges(
    server: LiveServer,
) -> None:
    answer = create(server)
    assert answer.status_code == 201
    assert answer.headers["Upload-Offset"] == "0"
    url = server.url(answer.headers["Location"])
    expires = parsedate_to_datetime(answer.headers["Upload-Expires"])
    assert 23 * 3600 < expires.timestamp() - time.time() <= 24 * 3600 + 1

    state = head(url)
    assert state.status_code == 200
    assert state.headers["Upload-Offset"] == "0"
    assert state.headers["Upload-Length"] == str(len(MP4))
    assert state.headers["Cache-Control"] == "no-store"
    assert "filename " + b64("videos/clip.mp4") in state.headers["Upload-Metadata"]

    first = patch(url, 0, MP4[:40000])
    assert first.status_code == 204, first.text
    assert first.headers["Upload-Offset"] == "40000"
    assert "Upload-Expires" in first.headers
    assert head(url).headers["Upload-Offset"] == "40000"

    # In progress: not listed, not readable, under its name or anything else.
    assert "videos/clip.mp4" not in listed(server)
    assert requests.get(server.url("/fs/videos/clip.mp4"), timeout=30).status_code == 404
    upload_id = url.rsplit("/", 1)[1]
    # GridFS: the chunks' files_id before the "-"; a local id may itself start with "-"
    for key in {upload_id, upload_id.split("-")[0]} - {""}:
        assert requests.get(server.url(f"/fs/{key}"), timeout=30).status_code == 404

    last = patch(url, 40000, MP4[40000:])
    assert last.status_code == 204, last.text
    assert last.headers["Upload-Offset"] == str(len(MP4))
    file_url = server.url(last.headers["Content-Location"])
    assert head(url).status_code == 404  # tus: a finished upload is no upload any more

    ranged = requests.get(file_url, headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert ranged.status_code == 206
    assert ranged.content == MP4[1000:2000]
    assert ranged.headers["Content-Type"] == "video/mp4"
    whole = requests.get(server.url("/fs/videos/clip.mp4"), timeout=30)
    assert whole.content == MP4
    assert listed(server) == ["videos/clip.mp4"]
    info = stored(server, "videos/clip.mp4")  # what PUT stores (S3 lists no metadata)
    assert info.metadata["sha256"] == hashlib.sha256(MP4).hexdigest()
    assert info.md5 == hashlib.md5(MP4).hexdigest()
    assert info.content_type == "video/mp4"


@pytest.mark.parametrize("backend", ["cached-gridfs", "fallback"], indirect=True)
def test_wrapped_storages_take_uploads_into_the_one_they_write(server: LiveServer) -> None:
    """The daemon puts a chunk cache in front of GridFS; a fallback chain writes to its first."""
    url = created(server, name="wrapped.mp4")
    assert patch(url, 0, MP4[:7000]).status_code == 204
    assert head(url).headers["Upload-Offset"] == "7000"
    assert patch(url, 7000, MP4[7000:]).status_code == 204
    ranged = requests.get(
        server.url("/fs/wrapped.mp4"), headers={"Range": "bytes=-500"}, timeout=30
    )
    assert ranged.status_code == 206 and ranged.content == MP4[-500:]


def test_creation_with_upload(server: LiveServer) -> None:
    answer = create(server, name="one.mp4", length=len(MP4), body=MP4[:5000])
    assert answer.status_code == 201, answer.text
    assert answer.headers["Upload-Offset"] == "5000"
    url = server.url(answer.headers["Location"])
    assert patch(url, 5000, MP4[5000:]).status_code == 204
    assert requests.get(server.url("/fs/one.mp4"), timeout=30).content == MP4

    whole = create(server, name="whole.mp4", length=len(MP4), body=MP4)
    assert whole.status_code == 201
    assert requests.get(server.url("/fs/whole.mp4"), timeout=30).content == MP4


def test_an_empty_file_is_complete_at_creation(server: LiveServer) -> None:
    answer = create(server, name="empty.txt", length=0)
    assert answer.status_code == 201, answer.text
    assert answer.headers["Upload-Offset"] == "0"
    assert "Content-Location" in answer.headers
    assert head(server.url(answer.headers["Location"])).status_code == 404  # finished
    got = requests.get(server.url("/fs/empty.txt"), timeout=30)
    assert got.status_code == 200 and got.content == b""
    # Deferred, then set to 0 by an empty PATCH.
    url = created(server, name="later-empty.txt", length=None)
    assert patch(url, 0, b"", Upload_Length="0").status_code == 204
    assert requests.get(server.url("/fs/later-empty.txt"), timeout=30).content == b""


def test_defer_length(server: LiveServer) -> None:
    url = created(server, name="later.mp4", length=None)
    state = head(url)
    assert state.headers["Upload-Defer-Length"] == "1"
    assert "Upload-Length" not in state.headers
    assert patch(url, 0, MP4[:10000]).status_code == 204
    # A length below what is stored is a conflict; then the right one finishes it.
    assert patch(url, 10000, b"", Upload_Length="9999").status_code == 409
    done = patch(url, 10000, MP4[10000:], Upload_Length=str(len(MP4)))
    assert done.status_code == 204, done.text
    assert requests.get(server.url("/fs/later.mp4"), timeout=30).content == MP4


@pytest.mark.media
def test_a_finished_upload_gets_media_facts_and_posters_as_put(
    start: Callable[..., LiveServer], media_dir: Path
) -> None:
    server = start(media=lambda storage: MediaService(storage))
    clip = (media_dir / "clip-end.mp4").read_bytes()
    url = created(server, name="m/clip.mp4", length=len(clip))
    assert patch(url, 0, clip[:10000]).status_code == 204
    assert patch(url, 10000, clip[10000:]).status_code == 204
    server.run_coroutine(server.media.idle(), timeout=300)
    (described,) = requests.get(server.url("/fs/m/"), timeout=30).json()["files"]
    media = described["media"]
    assert media is not None and media["video"]["codec"] == "h264"
    assert media["faststart"] is False  # flagged, not rewritten
    poster = requests.get(server.url("/fs/m/clip.mp4"), params={"poster": "small"}, timeout=30)
    assert poster.status_code == 200 and poster.headers["Content-Type"] == "image/jpeg"


def test_content_location_is_signed_when_reads_need_signatures(
    start: Callable[..., LiveServer],
) -> None:
    acl = default_acl(upload_token="alice", signing_key="k", require_signed_reads=True)
    server = start(acl=acl, signing_key="k")
    url = created(server, name="signed.mp4")
    done = patch(url, 0, MP4)
    assert done.status_code == 204
    location = done.headers["Content-Location"]
    assert "sig=" in location
    assert requests.get(server.url(location), timeout=30).content == MP4
    assert requests.get(server.url(location.split("?")[0]), timeout=30).status_code == 401


def test_name_conflicts_follow_the_policy(start: Callable[..., LiveServer]) -> None:
    server = start(upload_policy=UploadPolicy(on_conflict="reject"))
    requests.put(server.url("/fs/taken.mp4"), headers=ALICE, data=MP4, timeout=30)
    assert create(server, name="taken.mp4").status_code == 409


def test_method_override(server: LiveServer) -> None:
    url = created(server, name="override.mp4")
    headers = {**TUS, **ALICE, **OCTETS, "Upload-Offset": "0", "X-HTTP-Method-Override": "PATCH"}
    answer = requests.post(url, headers=headers, data=MP4, timeout=30)
    assert answer.status_code == 204, answer.text
    assert requests.get(server.url("/fs/override.mp4"), timeout=30).content == MP4


# -- refusals ---------------------------------------------------------------------------------


def test_missing_or_unsupported_tus_resumable_is_412(server: LiveServer) -> None:
    url = created(server)
    for version in (None, "0.2.2"):
        headers = {**ALICE, **({"Tus-Resumable": version} if version else {})}
        for method in ("POST", "HEAD", "PATCH", "DELETE"):
            target = server.url("/fs/.uploads/") if method == "POST" else url
            answer = requests.request(method, target, headers=headers, timeout=30)
            assert answer.status_code == 412, (method, version)
            assert answer.headers["Tus-Version"] == "1.0.0"
    assert head(url).status_code == 200


def test_wrong_offset_409_wrong_type_415_too_much_413(server: LiveServer) -> None:
    url = created(server, length=100)
    assert patch(url, 0, b"x" * 10).status_code == 204
    conflict = patch(url, 0, b"x" * 10)
    assert conflict.status_code == 409
    wrong_type = patch(url, 10, b"x", extra={"Content-Type": "application/octet-stream"})
    assert wrong_type.status_code == 415
    assert patch(url, 10, b"x" * 91).status_code == 413
    assert head(url).headers["Upload-Offset"] == "10"


@pytest.mark.parametrize(
    "headers",
    [
        {"Upload-Length": "-1"},
        {"Upload-Length": "10", "Upload-Defer-Length": "1"},
        {},
        {"Upload-Length": "10", "Upload-Metadata": "filename ???"},
        {"Upload-Length": "10", "Upload-Metadata": f"filetype {b64('video/mp4')}"},
        {"Upload-Length": "10", "Upload-Metadata": f"filename {b64('../etc/passwd')}"},
    ],
    ids=["negative", "both", "neither", "metadata", "no-filename", "bad-name"],
)
def test_malformed_creation_is_400(server: LiveServer, headers: dict[str, str]) -> None:
    sent = {**TUS, **ALICE, "Upload-Metadata": metadata("a.mp4"), **headers}
    answer = requests.post(server.url("/fs/.uploads/"), headers=sent, timeout=30)
    assert answer.status_code == 400, answer.text


def test_malformed_patch_is_400(server: LiveServer) -> None:
    url = created(server)
    assert patch(url, 0, b"x", extra={"Upload-Offset": "-1"}).status_code == 400
    assert patch(url, 0, b"x", Upload_Checksum="crc32 AAAAAA==").status_code == 400


def test_size_is_refused_at_creation(start: Callable[..., LiveServer]) -> None:
    server = start(upload_policy=UploadPolicy(max_size=1000))
    assert create(server, length=1001).status_code == 413
    assert create(server, length=1001, user={}).status_code == 401  # the ACL first, as PUT
    url = created(server, name="small.bin", length=None)
    assert patch(url, 0, b"x" * 1001).status_code == 413
    assert patch(url, 0, b"x" * 1000, Upload_Length="1001").status_code == 413


def test_checksum(server: LiveServer, left: Callable[[], int]) -> None:
    url = created(server, name="sum.mp4")
    part = MP4[:20000]
    for algorithm in ("sha1", "sha256"):
        wrong = base64.b64encode(hashlib.new(algorithm, b"other").digest()).decode()
        bad = patch(url, 0, part, Upload_Checksum=f"{algorithm} {wrong}")
        assert bad.status_code == 460
        assert head(url).headers["Upload-Offset"] == "0"  # the bytes were discarded
    right = base64.b64encode(hashlib.sha1(part).digest()).decode()
    assert patch(url, 0, part, Upload_Checksum=f"sha1 {right}").status_code == 204
    rest = MP4[20000:]
    digest = base64.b64encode(hashlib.sha256(rest).digest()).decode()
    assert patch(url, 20000, rest, Upload_Checksum=f"sha256 {digest}").status_code == 204
    assert requests.get(server.url("/fs/sum.mp4"), timeout=30).content == MP4


def test_refused_type_is_415_and_terminated(server: LiveServer, left: Callable[[], int]) -> None:
    assert create(server, name="tool.exe").status_code == 415  # by its name, at creation
    page = b"<!DOCTYPE html><html><script>alert(1)</script></html>" + b" " * 20000
    url = created(server, name="page.txt", length=len(page))
    refused = patch(url, 0, page)
    assert refused.status_code == 415
    assert head(url).status_code == 404
    assert "page.txt" not in listed(server)
    assert left() == 0


def test_termination(server: LiveServer, left: Callable[[], int]) -> None:
    url = created(server, name="gone.mp4")
    assert patch(url, 0, MP4[:30000]).status_code == 204
    deleted = requests.delete(url, headers={**TUS, **ALICE}, timeout=30)
    assert deleted.status_code == 204
    assert head(url).status_code == 404
    assert patch(url, 30000, MP4[30000:]).status_code == 404
    assert requests.delete(url, headers={**TUS, **ALICE}, timeout=30).status_code == 404
    assert left() == 0


def test_expiry_is_sliding_then_404_and_removed(
    start: Callable[..., LiveServer], left: Callable[[], int]
) -> None:
    server = start(upload_expiry=5.0)  # long enough for a loaded machine's requests
    answer = create(server, name="slow.mp4")
    url = server.url(answer.headers["Location"])
    created_expiry = parsedate_to_datetime(answer.headers["Upload-Expires"])
    time.sleep(1.2)
    renewed = patch(url, 0, MP4[:1000])
    assert renewed.status_code == 204
    renewed_expiry = parsedate_to_datetime(renewed.headers["Upload-Expires"])
    assert renewed_expiry > created_expiry
    time.sleep(max(0.0, renewed_expiry.timestamp() - time.time()) + 1.2)
    assert head(url).status_code == 404
    assert patch(url, 1000, MP4[1000:]).status_code == 404
    assert left() == 0
