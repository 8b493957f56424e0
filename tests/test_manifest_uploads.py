"""DASH manifests and HLS playlists upload with curl and ``gridserve put``; other XML does not."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import requests

from tests.livehttp import LiveServer
from tests.test_cli import gridserve
from tests.test_uploads_http import TOKEN, writable  # noqa: F401 - the fixture

MANIFEST = (
    b'<?xml version="1.0" encoding="utf-8"?>\n'
    b'<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static"><Period/></MPD>\n'
)
PLAYLIST = b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg0.ts\n#EXT-X-ENDLIST\n"


def curl_upload(server: LiveServer, path: Path, url: str, *extra: str) -> tuple[int, str]:
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            *extra,
            "-T",
            str(path),
            server.url(url),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    body, _, status = result.stdout.rpartition("\n")
    return int(status), body


def test_curl_uploads_a_dash_manifest(writable: LiveServer, tmp_path: Path) -> None:  # noqa: F811
    manifest = tmp_path / "manifest.mpd"
    manifest.write_bytes(MANIFEST)
    # Before: 415 "text/xml (manifest.mpd) not allowed", with or without the right type.
    for extra in ([], ["-H", "Content-Type: application/dash+xml"]):
        status, body = curl_upload(writable, manifest, "/fs/dash/", *extra)
        assert status == 201, body
        assert json.loads(body)["contentType"] == "application/dash+xml"
    served = requests.get(writable.url("/fs/dash/manifest.mpd"), timeout=10)
    assert served.headers["Content-Type"] == "application/dash+xml"
    assert served.content == MANIFEST


def test_other_xml_named_mpd_is_still_refused(writable: LiveServer, tmp_path: Path) -> None:  # noqa: F811
    fake = tmp_path / "manifest.mpd"
    fake.write_bytes(b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"></html>')
    status, _ = curl_upload(writable, fake, "/fs/dash/", "-H", "Content-Type: application/dash+xml")
    assert status == 415


def test_curl_data_binary_form_type_counts_as_undeclared(
    writable: LiveServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    playlist = tmp_path / "index.m3u8"
    playlist.write_bytes(PLAYLIST)
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-X",
            "PUT",
            "--data-binary",
            f"@{playlist}",
            "-H",
            f"Authorization: Bearer {TOKEN}",
            writable.url("/fs/live/index.m3u8"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # curl -d sends application/x-www-form-urlencoded: that must not become the file's type.
    assert json.loads(result.stdout)["contentType"] == "application/vnd.apple.mpegurl"


def test_gridserve_put_stores_manifests_as_what_they_are(tmp_path: Path) -> None:
    (tmp_path / "manifest.mpd").write_bytes(MANIFEST)
    (tmp_path / "index.m3u8").write_bytes(PLAYLIST)
    store = tmp_path / "store"
    store.mkdir()
    result = subprocess.run(
        gridserve("put", "manifest.mpd", "index.m3u8", "--storage", str(store)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    types = [json.loads(line)["contentType"] for line in result.stdout.splitlines()]
    # Before: the manifest was stored as text/xml.
    assert types == ["application/dash+xml", "application/vnd.apple.mpegurl"]
