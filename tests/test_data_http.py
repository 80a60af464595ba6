"""Real downloads over HTTP, from a server on this machine's loopback address.

These exercise the network path (pooch, the progress bar, the zip member) without
leaving the machine: CI has no internet, and tests should not depend on it anyway.
"""

import hashlib
import io
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from buildllm import data

PAYLOAD = b"ham\tSee you at the meeting\nspam\tWIN a free GPU now\n" * 50


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (the name http.server calls)
        if self.path == "/file.txt":
            body = PAYLOAD
        elif self.path == "/archive.zip":
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as zf:
                zf.writestr("readme.txt", "not this one")
                zf.writestr("SMSSpamCollection", PAYLOAD)
            body = buffer.getvalue()
        elif self.path == "/cut-short.txt":
            # Promise the whole file, send a third of it, hang up: a dropped connection.
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD[: len(PAYLOAD) // 3])
            self.wfile.flush()
            self.close_connection = True
            return
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def online(cache, monkeypatch):
    """Downloads allowed: no mirror."""
    monkeypatch.delenv("BUILDLLM_MIRROR", raising=False)
    return cache


def register(monkeypatch, name, url, content=PAYLOAD):
    entry = data.RemoteFile(name, url, hashlib.sha256(content).hexdigest(), len(content))
    monkeypatch.setitem(data.FILES, name, entry)


def test_http_download_is_verified_and_cached(online, server, monkeypatch):
    register(monkeypatch, "file.txt", f"{server}/file.txt")
    assert data.fetch("file.txt").read_bytes() == PAYLOAD
    assert [p.name for p in online.iterdir()] == ["file.txt"]


def test_zip_download_keeps_only_the_named_member(online, server, monkeypatch):
    register(monkeypatch, "SMSSpamCollection", f"{server}/archive.zip")
    assert data.fetch("SMSSpamCollection").read_bytes() == PAYLOAD
    assert [p.name for p in online.iterdir()] == ["SMSSpamCollection"]


def test_download_with_the_wrong_hash_is_rejected_and_not_kept(online, server, monkeypatch):
    register(monkeypatch, "file.txt", f"{server}/file.txt", content=b"what we expected")
    with pytest.raises(data.DownloadError, match="sha256"):
        data.fetch("file.txt")
    assert list(online.iterdir()) == []


def test_connection_dropped_mid_download_leaves_nothing_behind(online, server, monkeypatch):
    register(monkeypatch, "cut-short.txt", f"{server}/cut-short.txt")
    with pytest.raises(data.DownloadError) as info:
        data.fetch("cut-short.txt")
    assert f"{server}/cut-short.txt" in str(info.value)
    assert list(online.iterdir()) == []


def test_http_error_names_the_file_and_where_to_put_it(online, server, monkeypatch):
    register(monkeypatch, "gone.txt", f"{server}/gone.txt")
    with pytest.raises(data.DownloadError, match="404") as info:
        data.fetch("gone.txt")
    assert str(online / "gone.txt") in str(info.value)
