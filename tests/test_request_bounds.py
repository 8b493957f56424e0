"""What a stranger (or a token holder) sends cannot grow state, fake an outage, or sneak a
second spelling of a name in: review findings 4, 7, 8, 9 and 10 over real sockets, and the
local tree left as the user made it (operability issue, item 5)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from gridserve.acl import default_acl
from gridserve.handlers.files import MAX_CONCURRENT_LISTINGS
from gridserve.multipart import parse_disposition
from gridserve.names import InvalidName, normalize_folder, normalize_name
from gridserve.storage.base import FileInfo
from gridserve.storage.local import LocalStorage
from tests.livehttp import LiveServer

TOKEN = "upload-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
both_backends = pytest.mark.parametrize("backend", ["gridfs", "local"], indirect=True)


@pytest.fixture
def writable(serve: Callable[..., LiveServer]) -> LiveServer:
    return serve(acl=default_acl(upload_token=TOKEN))


def listed(server: LiveServer, prefix: str = "") -> list[str]:
    response = requests.get(server.url("/fs/"), params={"prefix": prefix}, timeout=10)
    assert response.status_code == 200
    return [f["filename"] for f in response.json()["files"]]


# -- finding 4: metric labels from fixed sets ------------------------------------------------


@both_backends
def test_invented_methods_do_not_grow_the_metrics(server: LiveServer) -> None:
    for number in range(40):
        method = f"X{number:02d}" + "M" * 4000
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(f"{method} /fs/a HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            assert sock.recv(100).startswith(b"HTTP/1.1 405")
    metrics = requests.get(server.url("/metrics"), timeout=10).text
    assert len(metrics) < 20_000
    assert 'gridserve_requests_total{method="other",status="405"} 40.0' in metrics


# -- findings 8 and 9: one name normalisation, form file names as UTF-8 ----------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [("cafe\u0301/x", "café/x"), ("a/b", "a/b"), ("x" * 255, "x" * 255)],
)
def test_names_normalise(name: str, expected: str) -> None:
    assert normalize_name(name) == expected


@pytest.mark.parametrize(
    "name", ["", "a//b", "a/", "/a", "./a", "a/../b", ".env", "a\x00", "x" * 256]
)
def test_names_refuse(name: str) -> None:
    with pytest.raises(InvalidName):
        normalize_name(name)


def test_folders_normalise() -> None:
    assert normalize_folder("") == ""
    assert normalize_folder("cafe\u0301/") == "café/"
    assert normalize_folder("a") == "a/"
    for bad in ("/", "a//", "a/./", "../", ".git/"):
        with pytest.raises(InvalidName):
            normalize_folder(bad)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('form-data; name="file"; filename="日本.txt"'.encode(), "日本.txt"),
        ('form-data; name="file"; filename="😀.txt"'.encode(), "😀.txt"),
        (b"form-data; name=file; filename*=UTF-8''%E6%97%A5.txt; filename=\"x.txt\"", "日.txt"),
        (b'form-data; name="file"; filename="C:\\Users\\me\\a.mp3"', "C:\\Users\\me\\a.mp3"),
        (b'form-data; name="file"; filename="say \\"hi\\".txt"', 'say "hi".txt'),
        (b'form-data; name="file"; filename="caf\xe9.txt"', "café.txt"),  # Latin-1 bytes
        (b'form-data; name="file"; filename="a;b.txt"', "a;b.txt"),
        (b"form-data; name=\"file\"; filename*=UTF-8''%FF; filename=y", "y"),
    ],
)
def test_form_file_names_parse_from_raw_bytes(raw: bytes, expected: str) -> None:
    params = parse_disposition(raw)
    assert params["name"] == "file" and params["filename"] == expected


def test_any_disposition_bytes_parse() -> None:
    for raw in (b"", b";", b";;=", b'; filename="', b"; =x", bytes(range(256)), b"; a=\xff\xfe"):
        assert isinstance(parse_disposition(raw), dict)


@both_backends
def test_post_folders_are_normalised_like_put(writable: LiveServer) -> None:
    files = {"file": ("clip.bin", b"data", "application/octet-stream")}
    refused = requests.post(writable.url("/fs/a//"), files=files, headers=AUTH, timeout=10)
    assert refused.status_code == 400
    nfd = requests.post(writable.url("/fs/cafe%CC%81/"), files=files, headers=AUTH, timeout=10)
    nfc = requests.post(writable.url("/fs/caf%C3%A9/"), files=files, headers=AUTH, timeout=10)
    assert (nfd.status_code, nfc.status_code) == (201, 201)
    assert nfd.json()["files"][0]["filename"] == "café/clip.bin"
    names = listed(writable)
    assert names == ["café/clip.bin"]
    assert unicodedata.is_normalized("NFC", names[0])


@both_backends
def test_form_uploads_with_any_unicode_name(writable: LiveServer, tmp_path: Path) -> None:
    for name in ("日本.txt", "😀.txt"):
        files = {"file": (name, b"hello", "text/plain")}
        response = requests.post(writable.url("/fs/req/"), files=files, headers=AUTH, timeout=10)
        assert response.status_code == 201, response.text
        assert response.json()["files"][0]["filename"] == f"req/{name}"
        source = tmp_path / name
        source.write_bytes(b"hello")
        curl = subprocess.run(
            [
                "curl",
                "-sS",
                "-H",
                f"Authorization: Bearer {TOKEN}",
                "-F",
                f"file=@{source}",
                writable.url("/fs/curl/"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert json.loads(curl.stdout)["files"][0]["filename"] == f"curl/{name}"
    assert listed(writable) == ["curl/日本.txt", "curl/😀.txt", "req/日本.txt", "req/😀.txt"]
    assert requests.get(writable.url("/fs/req/😀.txt"), timeout=10).content == b"hello"


# -- findings 7 and 10 over HTTP: local path errors are 4xx, no disk path logged -------------


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_local_path_errors_over_http(
    writable: LiveServer, local_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (local_root / "loop").symlink_to(local_root / "loop")
    outside = tmp_path / "outside"
    outside.mkdir()
    (local_root / "out").symlink_to(outside)
    long = "x" * 300
    with caplog.at_level(logging.INFO):
        assert requests.get(writable.url(f"/fs/{long}/a.txt"), timeout=10).status_code == 400
        assert requests.get(writable.url("/fs/loop/a.txt"), timeout=10).status_code == 404
        assert requests.head(writable.url("/fs/loop"), timeout=10).status_code == 404
        put = requests.put(writable.url("/fs/out/x.txt"), data=b"x", headers=AUTH, timeout=10)
        assert put.status_code == 400
        put = requests.put(writable.url(f"/fs/{long}"), data=b"x", headers=AUTH, timeout=10)
        assert put.status_code == 400
        for first, second in (("m.json/b.txt", "m"), ("n", "n.json/b.txt")):
            for name in (first, second):
                put = requests.put(writable.url(f"/fs/{name}"), data=b"x", headers=AUTH, timeout=10)
                assert put.status_code == 201, (name, put.status_code)
    assert list(outside.iterdir()) == []
    assert list((local_root / ".gridserve" / "tmp").iterdir()) == []
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [w for w in warnings if str(local_root) in w or "Traceback" in w]


@pytest.mark.parametrize("backend", ["local"], indirect=True)
def test_serving_and_reading_a_tree_creates_nothing_in_it(
    serve: Callable[..., LiveServer], local_root: Path
) -> None:
    (local_root / "show").mkdir(parents=True)
    (local_root / "show" / "ep1.webm").write_bytes(b"abc")
    server = serve(acl=default_acl(upload_token=TOKEN))
    assert requests.get(server.url("/fs/show/ep1.webm"), timeout=10).content == b"abc"
    assert requests.get(server.url("/fs/nothing"), timeout=10).status_code == 404
    assert listed(server) == ["show/ep1.webm"]
    assert sorted(p.name for p in local_root.iterdir()) == ["show"]


# -- the CLI: a missing --storage directory is an error unless --create ----------------------


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridserve.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )


def test_cli_does_not_create_a_mistyped_storage(tmp_path: Path) -> None:
    typo = tmp_path / "Vidoes"
    result = run_cli("ls", "--storage", str(typo), cwd=tmp_path)
    assert result.returncode == 2 and "--create" in result.stderr
    assert "Traceback" not in result.stderr
    assert not typo.exists()
    result = run_cli("ls", cwd=tmp_path)  # the embedded default is not made by ls
    assert result.returncode == 2
    assert not (tmp_path / "gridserve-data").exists()
    result = run_cli("ls", "--storage", str(typo), "--create", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert typo.is_dir() and list(typo.iterdir()) == []


@both_backends
def test_a_refused_form_file_name_is_answered(
    writable: LiveServer,
) -> None:
    # The reader stopped consuming at the refusal while the parser still had parts of the
    # same body piece to hand over (more than its queue holds): the request hung.
    part = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\nx\r\n'
    body = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="bad\x01name.bin"\r\n\r\n'
        + b"x\r\n"
        + part * 40
        + b"--b--\r\n"
    )
    headers = {**AUTH, "Content-Type": "multipart/form-data; boundary=b"}
    response = requests.post(writable.url("/fs/"), data=body, headers=headers, timeout=60)
    assert response.status_code == 400
    assert listed(writable) == []


class GatedListings(LocalStorage):
    """A local store whose listings wait at a gate, counting how many are inside at once."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gate = asyncio.Event()
        self.inside = self.most_inside = 0

    async def list(
        self, prefix: str = "", limit: int = 100, after: str = ""
    ) -> AsyncIterator[FileInfo]:
        self.inside += 1
        self.most_inside = max(self.most_inside, self.inside)
        try:
            await self.gate.wait()
            async for info in super().list(prefix, limit, after):
                yield info
        finally:
            self.inside -= 1


def test_concurrent_listings_are_bounded(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_bytes(b"a")
    storage = GatedListings(tmp_path)
    server = LiveServer(lambda: storage).start()
    try:
        with ThreadPoolExecutor(MAX_CONCURRENT_LISTINGS + 4) as pool:
            answers = [
                pool.submit(requests.get, server.url("/fs/"), timeout=30)
                for _ in range(MAX_CONCURRENT_LISTINGS + 4)
            ]
            deadline = time.monotonic() + 10
            while storage.inside < MAX_CONCURRENT_LISTINGS:
                assert time.monotonic() < deadline, f"only {storage.inside} listings started"
                time.sleep(0.05)
            time.sleep(0.3)  # room for any listing beyond the bound to get in (none may)
            assert storage.inside == MAX_CONCURRENT_LISTINGS
            server.run_coroutine(_open(storage.gate))
            assert [a.result().status_code for a in answers] == [200] * len(answers)
        assert storage.most_inside == MAX_CONCURRENT_LISTINGS
    finally:
        server.stop()


async def _open(gate: asyncio.Event) -> None:
    gate.set()
