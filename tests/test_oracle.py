"""No existence oracle (issue 22, finding 3): whom the ACL refuses gets the same answer whether
or not the name or id exists, for read, delete and write; whom it allows learns an honest 404.
On GridFS and local disk, with and without --require-signed-reads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests
from bson import ObjectId
from tornado.httputil import HTTPServerRequest

from gridserve.acl import AnyOf, default_acl, sign_path
from gridserve.storage.base import FileInfo
from tests.conftest import PutFile
from tests.livehttp import LiveServer

pytestmark = pytest.mark.parametrize("backend", ["gridfs", "local"], indirect=True)

KEY = "k3y"
TOKEN = "t0ken"
Serve = Callable[..., LiveServer]
Answer = tuple[int, dict[str, str], int]


def answer(server: LiveServer, method: str, path: str, **kwargs: Any) -> Answer:
    """What a client can observe: status, headers (but Date), body length."""
    response = requests.request(method, server.url(path), timeout=10, **kwargs)
    headers = {k.lower(): v for k, v in response.headers.items() if k.lower() != "date"}
    return response.status_code, headers, len(response.content)


def missing_id(backend: str) -> str:
    return str(ObjectId()) if backend == "gridfs" else "no-such-id.txt"


@pytest.fixture
def existing(put_file: PutFile) -> dict[str, str]:
    file_id = put_file("private/a.txt", b"secret content")
    return {"name": "private/a.txt", "id": str(file_id)}


def test_signed_reads_do_not_tell_what_exists(
    serve: Serve, existing: dict[str, str], backend: str
) -> None:
    server = serve(
        acl=default_acl(signing_key=KEY, upload_token=TOKEN, require_signed_reads=True),
        signing_key=KEY,
    )
    pairs = [
        (existing["name"], "private/b.txt"),
        (existing["id"], missing_id(backend)),
        (f"{existing['name']}?rev=0", f"{existing['name']}?rev=5"),
    ]
    wrong_token = {"Authorization": "Bearer nope"}
    for there, absent in pairs:
        for method in ("GET", "HEAD", "DELETE"):
            refused = answer(server, method, f"/fs/{there}")
            assert refused[0] == 401 and "www-authenticate" in refused[1]
            assert answer(server, method, f"/fs/{absent}") == refused, (method, absent)
            forbidden = answer(server, method, f"/fs/{there}", headers=wrong_token)
            assert forbidden[0] == 403
            assert answer(server, method, f"/fs/{absent}", headers=wrong_token) == forbidden
    put_there = answer(server, "PUT", f"/fs/{existing['name']}", data=b"x")
    assert put_there[0] == 401
    assert answer(server, "PUT", "/fs/private/b.txt", data=b"x") == put_there
    # Whom the policy allows learns the truth: a signed URL vouches for its path.
    assert answer(server, "GET", sign_path(KEY, "/fs/private/b.txt", 60))[0] == 404
    assert answer(server, "GET", sign_path(KEY, f"/fs/{missing_id(backend)}", 60))[0] == 404
    assert answer(server, "GET", sign_path(KEY, f"/fs/{existing['id']}", 60))[0] == 200
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert answer(server, "DELETE", "/fs/private/b.txt", headers=auth)[0] == 404
    assert answer(server, "DELETE", f"/fs/{existing['name']}", headers=auth)[0] == 200


def test_open_reads_are_honest_and_disabled_uploads_say_why(
    serve: Serve, existing: dict[str, str], backend: str
) -> None:
    """Without --upload-token no credential can write or delete: 403 naming the flag, the
    same for a name that exists and one that does not (never 401 asking for a token)."""
    server = serve(acl=default_acl())
    assert answer(server, "GET", "/fs/private/b.txt")[0] == 404
    assert answer(server, "GET", f"/fs/{missing_id(backend)}")[0] == 404
    assert answer(server, "GET", f"/fs/{existing['id']}")[0] == 200
    for method, there, absent in [
        ("DELETE", existing["name"], "private/b.txt"),
        ("DELETE", existing["id"], missing_id(backend)),
        ("PUT", existing["name"], "private/b.txt"),
    ]:
        refused = answer(server, method, f"/fs/{there}", data=b"x")
        assert refused[0] == 403 and "www-authenticate" not in refused[1]
        assert answer(server, method, f"/fs/{absent}", data=b"x") == refused
    body = requests.delete(server.url(f"/fs/{existing['name']}"), timeout=10)
    assert body.headers["Content-Type"].startswith("text/plain")
    assert "--upload-token" in body.text and len(body.text) < 200
    post = requests.post(server.url("/fs/private/"), files={"file": b"x"}, timeout=10)
    assert post.status_code == 403 and "--upload-token" in post.text
    assert answer(server, "GET", f"/fs/{existing['name']}")[2] == len(b"secret content")


def test_a_hook_that_expects_file_info_keeps_working(
    serve: Serve, put_file: PutFile, backend: str
) -> None:
    """Hooks written when only found files reached them: a miss is a denial, like a file they
    would refuse, not a 500."""
    put_file("ann/public.txt", b"p", metadata={"public": True})
    put_file("ann/private.txt", b"q", metadata={})
    seen: list[Any] = []

    def public_only(request: HTTPServerRequest, action: str, target: Any) -> bool:
        seen.append(target)
        return bool(target.metadata.get("public"))

    server = serve(acl=AnyOf(public_only))
    assert answer(server, "GET", "/fs/ann/public.txt")[0] == 200
    private = answer(server, "GET", "/fs/ann/private.txt")
    assert private[0] == 401
    assert answer(server, "GET", "/fs/ann/none.txt") == private
    assert isinstance(seen[0], FileInfo) and seen[-1] == "ann/none.txt"
