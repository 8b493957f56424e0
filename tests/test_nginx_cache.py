"""deploy/nginx-cache.conf, the caching variant, as shipped: ``nginx -t``, then Debian's nginx
with it in front of a running gridserve. Files span several 1 MiB slices; every answer is
compared with the file's bytes, and gridserve's ``gridserve_sent_bytes_total`` tells whether
nginx asked it again."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import requests

from gridserve.acl import sign_path
from tests.conftest import upload_data
from tests.dbserver import free_port
from tests.nginxserver import CACHE_CONFIG, Nginx, site_from_deploy
from tests.test_daemon import Daemon, daemons  # noqa: F401 - the fixture
from tests.test_deploy import self_signed

MIB = 1024 * 1024
SIZE = 3 * MIB + MIB // 2  # four slices, the last one half full
KEY = "nginx-cache-key"


def sent_bytes(daemon: Daemon) -> float:
    text = requests.get(daemon.url("/metrics"), timeout=10).text
    match = re.search(r"^gridserve_sent_bytes_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


def media(tmp_path: Path, data: bytes) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "big.bin").write_bytes(data)
    return root


def cache_site(daemon: Daemon) -> str:
    return site_from_deploy(
        gridserve_port=daemon.port, listen_port=free_port(), source=CACHE_CONFIG
    )


def get(nginx: Nginx, path: str, **headers: str) -> requests.Response:
    return requests.get(nginx.url(path), headers=headers, timeout=30)


def test_the_shipped_cache_config_passes_nginx_t(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    site = CACHE_CONFIG.read_text()
    # The certificate paths must exist, and the cache directory is not created on this host.
    site = re.sub(r"ssl_certificate\s+\S+;", f"ssl_certificate {cert};", site)
    site = re.sub(r"ssl_certificate_key\s+\S+;", f"ssl_certificate_key {key};", site)
    site = re.sub(r"proxy_cache_path\s+\S+", f"proxy_cache_path {tmp_path / 'cache'}", site)
    result = Nginx.check(site)
    assert result.returncode == 0, result.stderr
    for needle in ["slice 1m;", "$slice_range", "proxy_cache_key $uri$is_args$args$slice_range;"]:
        assert needle in CACHE_CONFIG.read_text(), needle


def test_ranges_if_range_and_downloads_through_the_cache(
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    data = os.urandom(SIZE)
    daemon = Daemon("--storage", str(media(tmp_path, data)), env={"GRIDSERVE_UPLOAD_TOKEN": KEY})
    daemons.append(daemon)
    # Every slice nginx asks for carries the same strong ETag (nginx refuses to assemble
    # slices whose ETags differ), and it is the one of the whole file.
    whole = requests.head(daemon.url("/fs/big.bin"), timeout=10)
    etag = whole.headers["ETag"]
    assert not etag.startswith("W/")
    for start in range(0, SIZE, MIB):
        piece = requests.get(
            daemon.url("/fs/big.bin"),
            headers={"Range": f"bytes={start}-{start + MIB - 1}"},
            timeout=10,
        )
        assert piece.status_code == 206 and piece.headers["ETag"] == etag
        assert piece.content == data[start : start + MIB]
    site = cache_site(daemon)
    with Nginx(site) as nginx:
        before = sent_bytes(daemon)
        first = get(nginx, "/fs/big.bin")
        assert first.status_code == 200 and first.content == data, nginx.error_log()
        assert first.headers["ETag"] == etag
        assert first.headers["X-Cache-Status"] == "MISS"
        filled = sent_bytes(daemon)
        assert filled - before == SIZE  # each slice read once
        second = get(nginx, "/fs/big.bin")
        assert second.status_code == 200 and second.content == data
        assert second.headers["X-Cache-Status"] == "HIT"
        assert sent_bytes(daemon) == filled  # gridserve was not asked again
        # Ranges, within a slice, across slice ends, from the end, to the end: from the cache.
        for header, start, end in [
            ("bytes=10-99", 10, 99),
            (f"bytes={MIB - 100}-{MIB + 99}", MIB - 100, MIB + 99),
            (f"bytes={MIB // 2}-{3 * MIB}", MIB // 2, 3 * MIB),
            ("bytes=-1000", SIZE - 1000, SIZE - 1),
            (f"bytes={3 * MIB + 7}-", 3 * MIB + 7, SIZE - 1),
        ]:
            ranged = get(nginx, "/fs/big.bin", Range=header)
            assert ranged.status_code == 206, (header, ranged.status_code)
            assert ranged.headers["Content-Range"] == f"bytes {start}-{end}/{SIZE}"
            assert ranged.content == data[start : end + 1], header
        # If-Range: the current ETag gives the range, any other the whole file.
        current = get(nginx, "/fs/big.bin", Range="bytes=2000000-2000099", **{"If-Range": etag})
        assert current.status_code == 206 and current.content == data[2000000:2000100]
        stale = get(nginx, "/fs/big.bin", Range="bytes=5-9", **{"If-Range": '"other"'})
        assert stale.status_code == 200 and stale.content == data
        assert sent_bytes(daemon) == filled
        # A range of an uncached URL fills only the slices it touches; ?download= is its own
        # entry (the key holds the whole query), never the inline one.
        download = get(nginx, "/fs/big.bin?download=1", Range=f"bytes={MIB + 5}-{MIB + 9}")
        assert download.status_code == 206 and download.content == data[MIB + 5 : MIB + 10]
        assert download.headers["Content-Disposition"].startswith("attachment")
        assert sent_bytes(daemon) == filled + MIB
        assert get(nginx, "/fs/big.bin").headers["Content-Disposition"].startswith("inline")
        # Uploads pass the caching location untouched (its Range header is ignored).
        upload = upload_data(MIB + 3)
        put = requests.put(
            nginx.url("/fs/up.bin"),
            data=upload,
            headers={"Authorization": f"Bearer {KEY}"},
            timeout=30,
        )
        assert put.status_code == 201, put.text
        assert get(nginx, "/fs/up.bin").content == upload
        assert "etag mismatch" not in nginx.error_log()


def test_signed_reads_are_never_cached_for_anyone(
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    data = os.urandom(SIZE)
    daemon = Daemon(
        "--storage",
        str(media(tmp_path, data)),
        "--signing-key",
        KEY,
        "--require-signed-reads",
        "--cache-time",
        "3600",
    )
    daemons.append(daemon)
    site = cache_site(daemon)
    signed = sign_path(KEY, "/fs/big.bin", ttl=3600)
    with Nginx(site) as nginx:
        for _ in range(2):
            before = sent_bytes(daemon)
            answer = get(nginx, signed)
            assert answer.status_code == 200 and answer.content == data, nginx.error_log()
            assert answer.headers["Cache-Control"] == "private, max-age=3600"
            # Before: the second signed read was a HIT, stored for anyone asking that URL.
            assert answer.headers["X-Cache-Status"] != "HIT"
            assert sent_bytes(daemon) - before == SIZE
            ranged = get(nginx, signed, Range=f"bytes={MIB - 3}-{MIB + 2}")
            assert ranged.status_code == 206 and ranged.content == data[MIB - 3 : MIB + 3]
        for unsigned in ["/fs/big.bin", "/fs/big.bin?download=1"]:
            refused = get(nginx, unsigned)
            assert refused.status_code == 401, unsigned
            assert data[:4096] not in refused.content
        refused = get(nginx, "/fs/big.bin", Range="bytes=0-99")
        assert refused.status_code == 401 and refused.content != data[:100]


def test_a_replaced_file_is_not_served_stale_past_its_cache_time(
    tmp_path: Path,
    daemons: list[Daemon],  # noqa: F811
) -> None:
    old, new = os.urandom(SIZE), os.urandom(SIZE + 1000)
    root = media(tmp_path, old)
    daemon = Daemon("--storage", str(root), "--cache-time", "1")
    daemons.append(daemon)
    site = cache_site(daemon)
    site, count = re.subn(r"proxy_cache_valid 200 206 \S+;", "proxy_cache_valid 200 206 1s;", site)
    assert count == 1
    with Nginx(site) as nginx:
        assert get(nginx, "/fs/big.bin").content == old
        assert get(nginx, "/fs/big.bin", Range="bytes=0-99").content == old[:100]
        replacement = root / "big.bin.new"
        replacement.write_bytes(new)
        os.replace(replacement, root / "big.bin")
        time.sleep(2.5)  # past the cache time (1 s) on both sides: a lower bound, never a race
        fresh = get(nginx, "/fs/big.bin")
        assert fresh.status_code == 200 and fresh.content == new, fresh.headers
        ranged = get(nginx, "/fs/big.bin", Range=f"bytes={SIZE - 10}-")
        assert ranged.status_code == 206 and ranged.content == new[SIZE - 10 :]
