"""The media page's own behaviour in headless Chromium: empty state, paging, the token kept for
the session, delete, the icon, and a credential asked for when reads need signed URLs.
Screenshots of the empty state and of a signed-reads listing go to test-artifacts/."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import requests

from gridserve.acl import default_acl, sign_path
from tests.conftest import PutFile
from tests.livehttp import LiveServer
from tests.test_browser import ARTIFACTS, Recorder, browser, open_page, page  # noqa: F401

pytestmark = pytest.mark.browser
TOKEN = "t0k"


def rows(page: Any) -> list[str]:  # noqa: F811
    names: list[str] = page.eval_on_selector_all(
        "#files tbody tr", "trs => trs.map(tr => tr.dataset.filename)"
    )
    return names


def test_the_empty_state_explains_where_files_go_and_no_404(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
) -> None:
    recorder = Recorder()
    server = serve(ui=True, ui_uploads=True, acl=default_acl(upload_token=TOKEN),
                   log_function=recorder)  # fmt: skip
    open_page(page, server)
    empty = page.locator("#empty")
    assert empty.is_visible()
    text = empty.text_content()
    # Before: a red "No files yet." alert and nothing on where files go.
    assert "No files yet." in text and "curl -T clip.webm" in text and "gridserve put" in text
    assert not page.locator("#message").is_visible()
    assert not page.locator("#more").is_visible()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-empty.png"))
    # Before: /favicon.ico was a 404 logged as a warning on every load.
    assert [r.path for r in recorder.requests if r.status >= 400] == []


def test_more_pages_once_and_hides_at_the_end(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
    put_file: PutFile,
) -> None:
    for name in ("a.txt", "b.txt", "c.txt"):
        put_file(name, name.encode())
    server = serve(ui=True)
    page.goto(server.url("/?limit=2"))
    page.wait_for_selector("body[data-ready=true]", timeout=15000)
    assert rows(page) == ["a.txt", "b.txt"]
    more = page.locator("#more")
    assert more.is_visible()
    more.dblclick()  # two clicks before the answer: one page appended, once
    page.wait_for_function("() => document.querySelectorAll('#files tbody tr').length >= 3")
    page.wait_for_timeout(300)  # room for a duplicate append to show (not a timing assertion)
    assert rows(page) == ["a.txt", "b.txt", "c.txt"]
    # Before: "display: block" beat the hidden attribute and More stayed, appending again.
    assert not more.is_visible()


def test_the_token_stays_for_the_session_and_delete_removes_the_name(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
    put_file: PutFile,
    tmp_path: Any,
) -> None:
    put_file("old/clip.txt", b"first")
    put_file("old/clip.txt", b"second")  # two revisions on GridFS
    server = serve(ui=True, ui_uploads=True, acl=default_acl(upload_token=TOKEN))
    open_page(page, server)
    upload = tmp_path / "notes.txt"
    upload.write_text("hello\n")
    page.fill("#upload-token", TOKEN)
    page.set_input_files("#upload-files", str(upload))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("tr[data-filename='notes.txt']", timeout=15000)
    # Before: the form reset cleared the token after each upload.
    assert page.input_value("#upload-token") == TOKEN
    page.reload()
    page.wait_for_selector("body[data-ready=true]", timeout=15000)
    assert page.input_value("#upload-token") == TOKEN
    page.on("dialog", lambda dialog: dialog.accept())
    page.click("tr[data-filename='old/clip.txt'] td.actions button")
    page.wait_for_selector("tr[data-filename='old/clip.txt']", state="detached", timeout=15000)
    assert "Deleted old/clip.txt" in page.locator("#upload-status").text_content()
    assert requests.get(server.url("/fs/old/clip.txt"), timeout=10).status_code == 404


def test_signed_reads_ask_for_a_credential_before_listing(
    page: Any,  # noqa: F811
    serve: Callable[..., LiveServer],
    put_file: PutFile,
) -> None:
    put_file("videos/a.txt", b"private a")
    put_file("videos/b.txt", b"private b")
    key = "k3y"
    server = serve(
        ui=True, acl=default_acl(signing_key=key, require_signed_reads=True), signing_key=key
    )
    open_page(page, server)
    # Nothing listed for whoever loads the page: a credential is asked for.
    assert rows(page) == []
    assert page.locator("#credential").is_visible()
    assert "not allowed to list" in page.locator("#message").text_content()
    page.fill("#credential-url", server.url(sign_path(key, "/fs/", 3600)))
    page.click("#credential-form button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#files tbody tr').length === 2")
    assert rows(page) == ["videos/a.txt", "videos/b.txt"]
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page-signed-reads.png"))
    # The listed links are signed: they play without anything else.
    href = page.get_attribute("tr[data-filename='videos/a.txt'] td.download a", "href")
    assert href is not None and "sig=" in href
    assert requests.get(server.url(href), timeout=10).content == b"private a"
