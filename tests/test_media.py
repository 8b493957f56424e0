"""Media facts, posters and faststart through a live server on each backend, with media made by
ffmpeg (tests/mediafiles.py): facts match ffprobe run directly on the source file, posters
decode at their size, derived files go with the original and never show in listings."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from gridserve.acl import default_acl
from gridserve.media import faststart
from gridserve.media.probe import facts
from gridserve.media.service import MediaService
from gridserve.storage import from_uri
from gridserve.storage.base import Storage
from gridserve.storage.local import LocalStorage
from tests.conftest import BACKENDS
from tests.livehttp import LiveServer
from tests.mediafiles import ffprobe, framemd5, media_dir

__all__ = ["media_dir"]
pytestmark = pytest.mark.media

TOKEN = "media-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TYPES = {
    "clip.webm": "video/webm",
    "clip-end.mp4": "video/mp4",
    "clip-fast.mp4": "video/mp4",
    "clip-end.mov": "video/quicktime",
    "tone.opus": "audio/ogg",
    "tone.mp3": "audio/mpeg",
    "still.png": "image/png",
    "still.jpg": "image/jpeg",
}
VOLATILE = ("posters", "probedAt", "faststart")


def start(serve: Callable[..., LiveServer], **options: Any) -> LiveServer:
    fast = options.pop("faststart", False)
    return serve(
        acl=default_acl(upload_token=TOKEN),
        media=lambda storage: MediaService(storage, faststart=fast),
        **options,
    )


def upload(server: LiveServer, name: str, data: bytes) -> dict[str, Any]:
    response = requests.put(
        server.url(f"/fs/{name}"),
        data=data,
        headers={**AUTH, "Content-Type": TYPES.get(name.rsplit("/", 1)[-1], "video/mp4")},
        timeout=60,
    )
    assert response.status_code == 201, response.text
    described: dict[str, Any] = response.json()
    return described


def settle(server: LiveServer) -> None:
    """Waits for the background queue to drain (a deadline only to detect a hang)."""
    server.run_coroutine(server.media.idle(), timeout=300)


def listing(server: LiveServer, prefix: str = "") -> list[dict[str, Any]]:
    response = requests.get(server.url("/fs/"), params={"prefix": prefix}, timeout=30)
    assert response.status_code == 200
    files: list[dict[str, Any]] = response.json()["files"]
    return files


def jpeg_size(data: bytes, tmp_path: Path) -> tuple[int, int]:
    path = tmp_path / f"p{hashlib.md5(data).hexdigest()}.jpg"
    path.write_bytes(data)
    stream = ffprobe(path)["streams"][0]
    assert stream["codec_name"] == "mjpeg"
    return int(stream["width"]), int(stream["height"])


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_facts_match_ffprobe_on_the_source_and_posters_decode(
    serve: Callable[..., LiveServer], media_dir: Path, tmp_path: Path, backend: str
) -> None:
    server = start(serve)
    for name in TYPES:
        upload(server, f"m/{name}", (media_dir / name).read_bytes())
    settle(server)
    listed = {entry["filename"]: entry for entry in listing(server, "m/")}
    assert sorted(listed) == sorted(f"m/{name}" for name in TYPES)  # no derived file listed
    for name in TYPES:
        direct = ffprobe(media_dir / name)
        media = listed[f"m/{name}"]["media"]
        assert media is not None, name
        expected = facts(direct)
        assert {k: v for k, v in media.items() if k not in VOLATILE} == expected, name
        # ... and the facts are ffprobe's own numbers, not a reinterpretation of them.
        video = next((s for s in direct["streams"] if s["codec_type"] == "video"), None)
        audio = next((s for s in direct["streams"] if s["codec_type"] == "audio"), None)
        if video is not None:
            assert media["video"]["codec"] == video["codec_name"]
            assert (media["video"]["width"], media["video"]["height"]) == (
                video["width"],
                video["height"],
            )
        if audio is not None:
            assert media["audio"]["channels"] == audio["channels"]
            assert media["audio"]["sampleRate"] == int(audio["sample_rate"])
        if not media["image"]:
            assert media["duration"] == pytest.approx(float(direct["format"]["duration"]), abs=1e-3)
        if name.endswith((".mp4", ".mov")):
            assert media["faststart"] is (name == "clip-fast.mp4"), name
        else:
            assert "faststart" not in media

        url = server.url(f"/fs/m/{name}")
        if video is None:
            assert media["posters"] == []
            assert requests.get(url, params={"poster": "small"}, timeout=30).status_code == 404
            continue
        assert media["posters"] == ["small", "large"], name
        for size, width in (("small", 320), ("large", 1280)):
            response = requests.get(url, params={"poster": size}, timeout=30)
            assert response.status_code == 200, (name, size)
            assert response.headers["Content-Type"] == "image/jpeg"
            assert "max-age=604800" in response.headers["Cache-Control"]
            got = jpeg_size(response.content, tmp_path)
            want_width = min(width, video["width"])
            assert got[0] == want_width, (name, size, got)
            ratio = video["height"] / video["width"]
            assert abs(got[1] - want_width * ratio) <= 2, (name, size, got)
            tag = response.headers["ETag"]
            assert tag.startswith('"p') and tag != listed[f"m/{name}"].get("md5")
            again = requests.get(
                url, params={"poster": size}, headers={"If-None-Match": tag}, timeout=30
            )
            assert again.status_code == 304


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_deleting_the_original_leaves_no_derived_file(
    serve: Callable[..., LiveServer], media_dir: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    server = start(serve)
    described = upload(server, "d/clip.webm", (media_dir / "clip.webm").read_bytes())
    settle(server)
    storage: Storage = server.storage
    info = server.run_coroutine(storage.resolve(described["id"]))
    names = server.run_coroutine(storage.derived_names(info))
    assert sorted(names) == (["metadata.json"] if backend == "s3" else []) + [
        "poster-large.jpg",
        "poster-small.jpg",
    ]
    url = server.url(f"/fs/{described['id']}")
    assert requests.delete(url, headers=AUTH, timeout=30).status_code == 200
    assert server.run_coroutine(storage.derived_names(info)) == []
    assert requests.get(url, params={"poster": "small"}, timeout=30).status_code == 404
    # Nothing in the backend's derived namespace at all.
    if backend == "gridfs":
        sync_db = request.getfixturevalue("sync_db")
        assert sync_db["fs.derived"].count_documents({}) == 0
    elif backend == "local":
        root: Path = request.getfixturevalue("local_root")
        assert [p for p in (root / ".gridserve" / "derived").rglob("*") if p.is_file()] == []
    else:
        keys = server.run_coroutine(_all_s3_keys(storage))
        assert keys == []


async def _all_s3_keys(storage: Any) -> list[str]:
    s3 = await storage._s3()
    listed = await s3.list_objects_v2(Bucket=storage.bucket)
    return [entry["Key"] for entry in listed.get("Contents", [])]


def test_bad_poster_sizes_are_400_and_no_poster_is_404(
    serve: Callable[..., LiveServer], media_dir: Path
) -> None:
    server = start(serve)
    upload(server, "p/still.png", (media_dir / "still.png").read_bytes())
    url = server.url("/fs/p/still.png")
    for size in ("huge", "999", ""):
        response = requests.get(url, params={"poster": size}, timeout=30)
        assert response.status_code == 400, size
    settle(server)
    assert requests.get(url, params={"poster": "small"}, timeout=30).status_code == 200
    assert (
        requests.get(
            server.url("/fs/p/none.png"), params={"poster": "small"}, timeout=30
        ).status_code
        == 404
    )


def test_reserved_names_cannot_be_uploaded(serve: Callable[..., LiveServer]) -> None:
    server = start(serve)
    for name in (".posters/x/small.jpg", "a/.gridserve/derived/x"):
        response = requests.put(server.url(f"/fs/{name}"), data=b"x", headers=AUTH, timeout=30)
        assert response.status_code == 400, name


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
def test_faststart_upload_stores_moov_first_with_the_same_frames(
    serve: Callable[..., LiveServer], media_dir: Path, tmp_path: Path, backend: str
) -> None:
    server = start(serve, faststart=True)
    source = media_dir / "clip-end.mp4"
    described = upload(server, "f/clip.mp4", source.read_bytes())
    stored = requests.get(server.url(f"/fs/{described['id']}"), timeout=60).content
    # The 201 describes the stored (rewritten) bytes.
    assert described["md5"] == hashlib.md5(stored).hexdigest()
    assert described["sha256"] == hashlib.sha256(stored).hexdigest()
    assert described["length"] == len(stored) == source.stat().st_size
    assert stored != source.read_bytes()
    boxes = faststart.top_level_boxes(lambda o, n: stored[o : o + n], len(stored))
    assert faststart.moov_first(boxes) is True
    (tmp_path / "stored.mp4").write_bytes(stored)
    assert framemd5(tmp_path / "stored.mp4") == framemd5(source)
    settle(server)
    assert listing(server, "f/")[0]["media"]["faststart"] is True


def test_without_faststart_the_upload_is_kept_and_flagged(
    serve: Callable[..., LiveServer], media_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = start(serve)
    source = (media_dir / "clip-end.mp4").read_bytes()
    with caplog.at_level(logging.INFO, logger="gridserve.media"):
        described = upload(server, "f/clip.mp4", source)
        settle(server)
    assert requests.get(server.url(f"/fs/{described['id']}"), timeout=60).content == source
    assert listing(server, "f/")[0]["media"]["faststart"] is False
    assert any("not faststart" in r.getMessage() for r in caplog.records)


def test_broken_media_counts_a_probe_failure_and_the_upload_stands(
    serve: Callable[..., LiveServer],
) -> None:
    server = start(serve)
    upload(server, "b/broken.mp4", b"\0\0\0\x18ftypisom" + bytes(5000))
    settle(server)
    assert listing(server, "b/")[0]["media"] is None
    metrics = requests.get(server.url("/metrics"), timeout=30).text
    assert "gridserve_probe_failures_total 1.0" in metrics
    # Text is never handed to ffprobe, so it fails nothing.
    requests.put(server.url("/fs/b/notes.txt"), data=b"hello", headers=AUTH, timeout=30)
    settle(server)
    assert (
        "gridserve_probe_failures_total 1.0"
        in requests.get(server.url("/metrics"), timeout=30).text
    )


def test_without_ffprobe_one_log_line_and_uploads_work(
    serve: Callable[..., LiveServer],
    media_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffprobe, no ffmpeg
    server = start(serve)
    with caplog.at_level(logging.WARNING, logger="gridserve.media"):
        for name in ("clip.webm", "tone.mp3"):
            upload(server, f"n/{name}", (media_dir / name).read_bytes())
    assert [r.getMessage() for r in caplog.records if "ffprobe not found" in r.getMessage()] != []
    assert len([r for r in caplog.records if "ffprobe not found" in r.getMessage()]) == 1
    assert all(entry["media"] is None for entry in listing(server, "n/"))


# -- the CLI ----------------------------------------------------------------------------------


def gridserve(*args: str) -> list[str]:
    return [sys.executable, "-m", "gridserve.cli", *args]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gridserve(*args), capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_probe_and_info_on_local_disk(media_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "store"

    async def seed() -> None:
        storage = LocalStorage(root)
        for name in ("clip.webm", "tone.mp3"):

            async def body(data: bytes = (media_dir / name).read_bytes()) -> Any:
                yield data

            await storage.save(f"v/{name}", body(), content_type=TYPES[name])
        await storage.close()

    asyncio.run(seed())  # stored without probing
    info = run_cli("info", "v/clip.webm", "--storage", str(root))
    assert info.returncode == 0 and json.loads(info.stdout)["media"] is None
    probed = run_cli("probe", "v/", "--storage", str(root))
    assert probed.returncode == 0, probed.stderr
    lines = [json.loads(line) for line in probed.stdout.splitlines()]
    assert [line["filename"] for line in lines] == ["v/clip.webm", "v/tone.mp3"]
    assert lines[0]["media"]["video"]["codec"] == "vp9"
    assert lines[1]["media"]["audio"]["codec"] == "mp3"
    shown = json.loads(run_cli("info", "v/clip.webm", "--storage", str(root)).stdout)
    assert shown["media"]["video"]["width"] == 320
    assert shown["media"]["posters"] == ["small", "large"]


def test_cli_put_probes_and_probe_faststart_writes_a_new_revision(
    media_dir: Path, mongo_uri: str, db_name: str, sync_db: Any, tmp_path: Path
) -> None:
    storage = ["--storage", mongo_uri.rstrip("/") + f"/{db_name}"]
    source = media_dir / "clip-end.mp4"
    put = run_cli("put", str(source), "--name", "v/clip.mp4", *storage)
    assert put.returncode == 0, put.stderr
    old = sync_db["fs.files"].find_one({"filename": "v/clip.mp4"})
    assert old["metadata"]["media"]["faststart"] is False  # put probed it
    probed = run_cli("probe", "v/", "--faststart", *storage)
    assert probed.returncode == 0, probed.stderr
    line = json.loads(probed.stdout.splitlines()[0])
    assert line["rewrittenFrom"] == str(old["_id"]) and line["id"] != str(old["_id"])
    assert line["media"]["faststart"] is True
    revisions = list(sync_db["fs.files"].find({"filename": "v/clip.mp4"}).sort("uploadDate", 1))
    assert len(revisions) == 2
    assert revisions[0]["md5"] == old["md5"] == hashlib.md5(source.read_bytes()).hexdigest()
    got = run_cli("get", "v/clip.mp4", "-o", str(tmp_path / "new.mp4"), *storage)
    assert got.returncode == 0, got.stderr
    new = (tmp_path / "new.mp4").read_bytes()
    assert hashlib.md5(new).hexdigest() == revisions[1]["md5"]
    boxes = faststart.top_level_boxes(lambda o, n: new[o : o + n], len(new))
    assert faststart.moov_first(boxes) is True
    assert framemd5(tmp_path / "new.mp4") == framemd5(source)


def test_faststart_and_media_facts_settings(tmp_path: Path) -> None:
    shown = run_cli("serve", "--faststart", "--no-media-facts", "--print-config")
    assert shown.returncode == 0, shown.stderr
    assert "faststart = true" in shown.stdout and "media_facts = false" in shown.stdout
    config = tmp_path / "g.toml"
    config.write_text("[gridserve]\nfaststart = true\n")
    from_file = run_cli("serve", "--config", str(config), "--print-config")
    assert "faststart = true" in from_file.stdout and "media_facts = true" in from_file.stdout
    env = subprocess.run(
        gridserve("serve", "--print-config"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "GRIDSERVE_FASTSTART": "1"},
    )
    assert "faststart = true" in env.stdout


def gated_ffprobe(tmp_path: Path) -> tuple[str, Path]:
    """An ffprobe that waits until the returned gate file exists, then runs the real one."""
    gate = tmp_path / "gate"
    script = tmp_path / "ffprobe-gated"
    real = tool_path("ffprobe")
    script.write_text(
        f'#!/bin/sh\nwhile [ ! -e "{gate}" ]; do sleep 0.05; done\nexec "{real}" "$@"\n'
    )
    script.chmod(0o755)
    return str(script), gate


def tool_path(name: str) -> str:
    path = shutil.which(name)
    assert path is not None
    return path


def test_the_201_never_waits_for_the_probe_and_the_queue_is_bounded(
    serve: Callable[..., LiveServer],
    media_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    ffprobe_path, gate = gated_ffprobe(tmp_path)
    server = serve(
        acl=default_acl(upload_token=TOKEN),
        media=lambda storage: MediaService(storage, ffprobe=ffprobe_path, queue_size=1),
    )
    data = (media_dir / "tone.mp3").read_bytes()
    with caplog.at_level(logging.WARNING, logger="gridserve.media"):
        # The probe of the first file is stuck behind the gate: the answers come anyway.
        answers = [upload(server, f"q/{n}.mp3", data) for n in range(3)]
    assert [answer["media"] for answer in answers] == [None, None, None]
    full = [r for r in caplog.records if "media queue full" in r.getMessage()]
    assert len(full) >= 1  # one in the worker, one queued, the rest skipped
    gate.touch()
    settle(server)
    media = [entry["media"] for entry in listing(server, "q/")]
    assert media[0] is not None and media[0]["audio"]["codec"] == "mp3"
    assert None in media  # skipped, for `gridserve probe` to catch up
    head = requests.head(server.url("/fs/q/0.mp3"), params={"poster": "small"}, timeout=30)
    assert head.status_code == 404


def test_poster_head_has_no_body(serve: Callable[..., LiveServer], media_dir: Path) -> None:
    server = start(serve)
    upload(server, "h/still.png", (media_dir / "still.png").read_bytes())
    settle(server)
    url = server.url("/fs/h/still.png")
    got = requests.get(url, params={"poster": "large"}, timeout=30)
    head = requests.head(url, params={"poster": "large"}, timeout=30)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == str(len(got.content))
    assert head.headers["ETag"] == got.headers["ETag"]


@pytest.mark.parametrize("backend", ["local", "gridfs"], indirect=True)
def test_faststart_upload_cut_short_leaves_nothing(
    serve: Callable[..., LiveServer], media_dir: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    import socket

    server = start(serve, faststart=True)
    data = (media_dir / "clip-end.mp4").read_bytes()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as client:
        client.sendall(
            f"PUT /fs/cut/clip.mp4 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: video/mp4\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data[: len(data) // 2]
        )
    # A later request on a fresh connection sees no file, and the storage holds no data.
    assert listing(server, "cut/") == []
    if backend == "local":
        root: Path = request.getfixturevalue("local_root")
        tmp = root / ".gridserve" / "tmp"
        assert not tmp.exists() or list(tmp.iterdir()) == []
        assert not (root / "cut").exists()
    else:
        sync_db = request.getfixturevalue("sync_db")
        assert sync_db["fs.files"].count_documents({}) == 0
        assert sync_db["fs.chunks"].count_documents({}) == 0


def test_signed_listing_hands_out_signed_poster_urls(
    serve: Callable[..., LiveServer], media_dir: Path
) -> None:
    from gridserve.acl import AnyOf, BearerToken, SignedURLs

    def listing_only(request: Any, action: str, target: Any) -> bool:
        return action == "list"

    server = serve(
        acl=AnyOf(listing_only, SignedURLs("k3y"), BearerToken(TOKEN)),
        signing_key="k3y",
        media=lambda storage: MediaService(storage),
    )
    upload(server, "s/still.jpg", (media_dir / "still.jpg").read_bytes())
    settle(server)
    entry = listing(server, "s/")[0]
    assert sorted(entry["posterUrls"]) == ["large", "small"]
    plain = server.url(f"/fs/{entry['id']}")
    assert requests.get(plain, params={"poster": "small"}, timeout=30).status_code == 401
    # Appending poster= to the signed file URL is refused: the signature covers the query.
    appended = server.url(entry["url"] + "&poster=small")
    assert requests.get(appended, timeout=30).status_code in (401, 403)
    for size in ("small", "large"):
        response = requests.get(server.url(entry["posterUrls"][size]), timeout=30)
        assert response.status_code == 200, size
        assert response.headers["Content-Type"] == "image/jpeg"
        assert response.content.startswith(b"\xff\xd8")


@pytest.mark.parametrize("backend", ["local", "s3"], indirect=True)
def test_a_file_replaced_before_its_probe_gets_the_facts_of_its_new_content(
    serve: Callable[..., LiveServer], media_dir: Path, tmp_path: Path, backend: str
) -> None:
    ffprobe_path, gate = gated_ffprobe(tmp_path)
    server = serve(
        acl=default_acl(upload_token=TOKEN),
        media=lambda storage: MediaService(storage, ffprobe=ffprobe_path),
    )
    upload(server, "r/clip.mp4", (media_dir / "clip.webm").read_bytes())  # probe held back
    upload(server, "r/clip.mp4", (media_dir / "clip-fast.mp4").read_bytes())  # same id
    gate.touch()
    settle(server)
    [entry] = listing(server, "r/")
    assert entry["media"]["container"] == facts(ffprobe(media_dir / "clip-fast.mp4"))["container"]
    assert entry["media"]["video"]["codec"] == "mpeg4"
    metrics = requests.get(server.url("/metrics"), timeout=30).text
    assert "gridserve_probe_failures_total 0.0" in metrics
    poster = requests.get(server.url("/fs/r/clip.mp4"), params={"poster": "small"}, timeout=30)
    assert poster.status_code == 200


@pytest.mark.parametrize("wrapper", ["cache", "fallback"])
def test_facts_and_posters_through_storage_wrappers(
    make_storage: Callable[[], Storage], media_dir: Path, wrapper: str, tmp_path: Path
) -> None:
    """The daemon wraps GridFS in a chunk cache, and may add fallbacks: facts and posters pass
    through to the storage that holds the file."""
    from gridserve.storage.cache import CachedStorage
    from gridserve.storage.fallback import FallbackStorage

    def wrapped() -> Storage:
        if wrapper == "cache":
            return CachedStorage(make_storage())
        return FallbackStorage(make_storage(), LocalStorage(tmp_path / "old"))

    server = LiveServer(
        wrapped,
        acl=default_acl(upload_token=TOKEN),
        media=lambda storage: MediaService(storage),
    ).start()
    try:
        upload(server, "w/clip.webm", (media_dir / "clip.webm").read_bytes())
        settle(server)
        [entry] = listing(server, "w/")
        assert entry["media"]["video"]["codec"] == "vp9"
        poster = requests.get(server.url("/fs/w/clip.webm"), params={"poster": "small"}, timeout=30)
        assert poster.status_code == 200
    finally:
        server.stop()


def test_migrate_copies_media_facts_and_posters(
    media_dir: Path, tmp_path: Path, mongo_uri: str, db_name: str
) -> None:
    source = tmp_path / "source"

    async def seed() -> None:
        storage = LocalStorage(source)

        async def body(data: bytes = (media_dir / "clip.webm").read_bytes()) -> Any:
            yield data

        await storage.save("v/clip.webm", body(), content_type=TYPES["clip.webm"])
        await storage.close()

    asyncio.run(seed())
    assert run_cli("probe", "v/", "--storage", str(source)).returncode == 0
    targets = [str(tmp_path / "target"), f"{mongo_uri.rstrip('/')}/{db_name}"]
    if "?" in mongo_uri:
        base, query = mongo_uri.split("?", 1)
        targets[1] = f"{base.rstrip('/')}/{db_name}?{query}"
    for target in targets:
        if not target.startswith("mongodb"):
            Path(target).mkdir()
        moved = run_cli("migrate", "--from", str(source), "--to", target)
        assert moved.returncode == 0, moved.stderr
        shown = json.loads(run_cli("info", "v/clip.webm", "--storage", target).stdout)
        assert shown["media"]["video"]["codec"] == "vp9", target
        assert shown["media"]["posters"] == ["small", "large"], target

        async def posters(uri: str = target) -> list[bytes | None]:
            found = []
            for where in (str(source), uri):
                storage = from_uri(where)
                info = await storage.resolve("v/clip.webm")
                derived = await storage.get_derived(info, "poster-small.jpg")
                found.append(derived.data if derived else None)
                await storage.close()
            return found

        mine, theirs = asyncio.run(posters())
        assert mine is not None and theirs == mine, target
