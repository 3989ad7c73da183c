"""The dashboard's Backups page (/ui/backups), end to end with the real binary over plain HTTP:
a directory is backed up into a repository whose password is a Steward secret, then the page
shows the DR report (the source, its status, the snapshot, the repository); reading it is
audited, a token without read on sys/backup is refused, and without a session the page leads
to the sign-in form."""

from __future__ import annotations

import uuid

import requests

from steward_testlib import make_token, signed_in


def config(tmp) -> str:
    files = tmp / "bk-files"
    files.mkdir()
    (files / "a.txt").write_text("hello\n" * 100)
    return f"""
[[backup.repositories]]
name = "main"
location = "{tmp / 'bk-repo'}"
password_secret = "dev/backup/main#password"

[[backup.sources]]
name = "files"
type = "directory"
paths = ["{files}"]
"""


def test_backups_page_shows_the_dr_report(server_factory, tmp_path):
    s = server_factory.new("sqlite", config_text=config(tmp_path))
    password = "pw-" + uuid.uuid4().hex
    r = s.write("dev", "backup/main", {"password": password})
    assert r.status_code in (200, 204), r.text
    r = s.cli("backup", "run", "files", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr

    # The JSON report agrees with what the page shows.
    r = s.api("GET", "/v1/sys/dr/report")
    assert r.status_code == 200, r.text
    rep = r.json()["data"]["report"]
    src = {x["name"]: x for x in rep["sources"]}["files"]
    assert src["status"] == "ok", src
    snapshot = src["last_successful_backup"]["snapshot"]

    http, _ = signed_in(s, s.token)
    r = http.get(s.url + "/ui/backups", timeout=10)
    assert r.status_code == 200, r.text[:500]
    page = r.text
    assert "<h1>Backups</h1>" in page
    assert r'<a href="/ui/backups" aria-current="page">Backups</a>' in page
    assert '<th scope="row">files<br>' in page and "directory → main" in page
    assert '<span class="pill ok">ok</span>' in page
    assert f">{snapshot[:8]}</code>" in page
    assert "(last backup, not proven by a drill)" in page
    assert "no drill configured" in page
    assert str(tmp_path / "bk-repo") in page and "never checked" in page
    assert "No backup sources are configured" not in page
    assert password not in page
    # The shortcut is listed with the others.
    assert "<kbd>g b</kbd> Backups" in page
    assert r.headers["cache-control"] == "no-store"

    # Reading the page is audited as a DR report read.
    assert any(l.get("action") == "dr.report" for l in s.audit_lines())

    # A token that may read checks but not sys/backup is refused, in words.
    tok = make_token(s, [{"env": "sys", "path": "checks", "capabilities": ["read"]}],
                     "viewer-" + uuid.uuid4().hex[:6])
    r = signed_in(s, tok)[0].get(s.url + "/ui/backups", timeout=10)
    assert r.status_code == 403 and "Not allowed" in r.text, (r.status_code, r.text[:500])
    assert 'class="pill' not in r.text and "directory → main" not in r.text

    # Signed out: to the sign-in form, which remembers the page.
    r = requests.get(s.url + "/ui/backups", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"] == "/ui/sign-in?next=%2Fui%2Fbackups", (
        r.status_code, r.headers.get("location"))


def test_backups_page_without_sources_says_how_to_add_one(server_factory):
    s = server_factory.new("sqlite")
    r = signed_in(s, s.token)[0].get(s.url + "/ui/backups", timeout=10)
    assert r.status_code == 200, r.text[:500]
    assert "No backup sources are configured." in r.text
    assert "<code>[[backup.sources]]</code>" in r.text and "docs/backup.md" in r.text
