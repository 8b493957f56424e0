"""``gridserve sign`` (issue 22, finding 13): what it signs (pure), and its URLs fetched by
curl from a running daemon; signing keys given twice for rotation."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from gridserve.config import SERVE_SETTINGS, resolve_settings
from gridserve.signing import SignError, plan_signed_request
from tests.dbserver import free_port
from tests.test_cli import gridserve, wait_for_http

NAME = "my show/ép 1 ?#%.txt"


# -- pure: what gets signed ------------------------------------------------------------------


def test_the_raw_name_path_is_encoded_canonically() -> None:
    plan = plan_signed_request(path=f"/fs/{NAME}")
    assert plan.method == "GET"
    assert plan.url == "/fs/my%20show/%C3%A9p%201%20%3F%23%25.txt"
    assert plan_signed_request(path="/fs/a", method="head").method == "GET"
    same = plan_signed_request(url="/fs/my%20show/%C3%A9p%201%20%3F%23%25.txt")
    assert same == plan
    with_params = plan_signed_request(path="/fs/a b", rev=0, download=True)
    assert with_params.url == "/fs/a%20b?rev=0&download=1"
    listing = plan_signed_request(path="/fs/pub/", params=["prefix=pub/a b", "limit=5"])
    assert listing.url == "/fs/pub/?prefix=pub/a%20b&limit=5"
    upload = plan_signed_request(
        path="/media/up/clip.webm", url_prefix="/media", method="PUT", max_size=100
    )
    assert upload == plan_signed_request(
        url="/media/up/clip.webm?max-size=100", url_prefix="/media", method="PUT"
    )
    assert upload.method == "PUT" and upload.url == "/media/up/clip.webm?max-size=100"
    assert plan_signed_request(path="/a/b", url_prefix="/").url == "/a/b"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"path": "/other/a"}, "outside the URL prefix /fs"),
        ({"path": "/fsx/a"}, "outside the URL prefix"),
        ({"path": "fs/a"}, "must start with"),
        ({"path": "/fs/a", "method": "DELETE"}, "never deletes"),
        ({"path": "/fs/up/", "method": "POST"}, "--method PUT"),
        ({"path": "/fs/a", "method": "PATCH"}, "GET, HEAD and PUT"),
        ({"path": "/fs/a", "method": "PUT"}, "needs --max-size"),
        ({"path": "/fs/up/", "method": "PUT", "max_size": 5}, "one file"),
        ({"path": "/fs/a", "method": "PUT", "max_size": 5, "rev": 1}, "only --max-size"),
        ({"path": "/fs/a", "params": ["prefix=x"]}, "--rev and --download"),
        ({"path": "/fs/pub/", "rev": 0}, "prefix=, after=, limit="),
        ({"path": "/fs/pub/", "params": ["prefix=secret/"]}, "outside the listed folder"),
        ({"path": "/fs/pub/", "params": ["limit=0"]}, "1 to 1000"),
        ({"path": "/fs/pub/", "params": ["prefix"]}, "KEY=VALUE"),
        ({"url": "/fs/a?exp=1&sig=x"}, "already has"),
        ({"url": "/fs/a#b"}, "fragment"),
        ({"url": "/fs/%FF"}, "not UTF-8"),
        ({"path": "/fs/a", "url": "/fs/a"}, "not both"),
        ({}, "not both"),
    ],
)
def test_what_the_server_would_refuse_is_not_signed(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(SignError, match=message):
        plan_signed_request(**kwargs)  # type: ignore[arg-type]


def test_signing_keys_rotate_from_every_source(tmp_path: Path) -> None:
    key = next(s for s in SERVE_SETTINGS if s.name == "signing_key")
    config = tmp_path / "gridserve.toml"
    config.write_text('[gridserve]\nsigning_key = ["new", "old"]\n')
    assert resolve_settings((key,), {}, {}, config)["signing_key"] == ("new", "old")
    config.write_text('[gridserve]\nsigning_key = "only one"\n')
    assert resolve_settings((key,), {}, {}, config)["signing_key"] == ("only one",)
    env = {"GRIDSERVE_SIGNING_KEY": "new\nold\n"}
    assert resolve_settings((key,), {}, env, None)["signing_key"] == ("new", "old")
    flags = {"signing_key": ["new", "old"]}
    assert resolve_settings((key,), flags, env, None)["signing_key"] == ("new", "old")


# -- a running daemon, fetched with curl --------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Signed reads only, keys "new" (signs) and "old", no upload token, local storage."""
    root = tmp_path / "data"
    (root / "my show").mkdir(parents=True)
    (root / NAME).write_bytes(b"episode one")
    port = free_port()
    process = subprocess.Popen(
        gridserve(
            "serve",
            "--storage",
            str(root),
            "--port",
            str(port),
            "--signing-key",
            "new",
            "--signing-key",
            "old",
            "--require-signed-reads",
            "--max-upload-size",
            "1M",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/healthz", process)
        yield f"http://127.0.0.1:{port}", root
    finally:
        process.terminate()
        process.communicate(timeout=20)


def sign(base: str, *args: str, key: str = "new") -> str:
    result = subprocess.run(
        gridserve("sign", "--base-url", base, "--signing-key", key, *args),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--globoff", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def status_of(*args: str) -> str:
    return curl("--output", "/dev/null", "--write-out", "%{http_code}", *args).stdout


def test_curl_fetches_a_signed_url_of_any_name(daemon: tuple[str, Path]) -> None:
    base, _ = daemon
    url = sign(base, f"/fs/{NAME}")
    fetched = curl("--fail", url)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == "episode one"
    assert status_of("--head", sign(base, f"/fs/{NAME}", "--method", "HEAD")) == "200"
    download = curl(
        "--fail",
        "--dump-header",
        "-",
        "--output",
        "/dev/null",
        sign(base, f"/fs/{NAME}", "--download"),
    )
    assert "attachment" in download.stdout.lower()
    assert curl("--fail", sign(base, f"/fs/{NAME}", "--rev", "0")).stdout == "episode one"
    assert curl("--fail", sign(base, f"/fs/{NAME}", key="old")).stdout == "episode one"
    assert status_of(sign(base, f"/fs/{NAME}", key="other")) == "403"
    assert status_of(url + "&rev=0") == "403"
    listing = curl("--fail", sign(base, "/fs/my show/", "--param", "prefix=my show/ép"))
    assert '"my show/\\u00e9p 1 ?#%.txt"' in listing.stdout
    assert status_of(sign(base, "/fs/my show/missing.txt")) == "404"


def test_a_scoped_upload_url_lets_curl_upload_one_file(
    daemon: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = daemon
    clip = tmp_path / "clip.webm"
    clip.write_bytes(b"\x1aE\xdf\xa3" + b"v" * 996)
    url = sign(base, "--method", "PUT", "--max-size", "1000", "/fs/up/clip.webm")
    assert status_of("--upload-file", str(clip), url) == "201"
    assert (root / "up" / "clip.webm").read_bytes() == clip.read_bytes()
    clip.write_bytes(b"\x1aE\xdf\xa3" + b"v" * 997)
    assert status_of("--upload-file", str(clip), url) == "413"
    other = url.replace("clip.webm", "other.webm")
    assert status_of("--upload-file", str(clip), other) == "403"
    assert status_of("--request", "DELETE", url) == "403"
    assert not (root / "up" / "other.webm").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["/elsewhere/a"],
        ["--method", "DELETE", "/fs/a"],
        ["--method", "PUT", "/fs/a"],
        ["--param", "prefix=x", "/fs/a"],
        ["--ttl", "0", "/fs/a"],
        [],
    ],
)
def test_sign_refuses_with_exit_2(args: list[str]) -> None:
    result = subprocess.run(
        gridserve("sign", "--signing-key", "k", *args),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2, result.stdout
    assert "Traceback" not in result.stderr and result.stderr.startswith("gridserve: ")
