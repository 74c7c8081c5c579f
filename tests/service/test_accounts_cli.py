"""`clipsearch users|keys|share|audit` on the served library's catalog: what the command line
does is what the running server (a real socket) then allows."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from accounts_testlib import served_library

from clipsearch.service.cli import main

PASSWORD = "a long enough passphrase"


def _cli(capsys: pytest.CaptureFixture[str], data: Path, *args: str, stdin: str = "") -> str:
    import sys

    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main([*args, "--data-dir", str(data)])
    finally:
        sys.stdin = old
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_people_keys_and_sharing_from_the_command_line(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with served_library(tmp_path, tiny_model_dir) as served:
        data = Path(served.settings.catalog.data_dir)
        pw = PASSWORD + "\n"
        _cli(capsys, data, "users", "add", "viv", "--role", "viewer", "--password-stdin", stdin=pw)
        listed = json.loads(_cli(capsys, data, "users", "list", "--json"))
        assert [(u["name"], u["role"]) for u in listed] == [("viv", "viewer")]
        assert PASSWORD not in json.dumps(listed)
        made = json.loads(
            _cli(capsys, data, "keys", "create", "--user", "viv", "--name", "s", "--json")
        )
        key = made["key"]
        assert made["scopes"] == ["read"] and key.startswith("csk_")
        assert key not in _cli(capsys, data, "keys", "list")  # shown once

        with served.client(headers={"Authorization": f"Bearer {key}"}) as viv:
            assert viv.get("/api/images").json()["items"] == []  # nothing shared yet
            _cli(capsys, data, "share", str(served.photos / "alpha"), "--with", "viv")
            paths = [i["path"] for i in viv.get("/api/images").json()["items"]]
            assert len(paths) == 2 and all("/alpha/" in p for p in paths)
            # a password set on the command line signs in on the server
            with served.client() as browser:
                r = browser.post("/api/session", json={"name": "viv", "password": PASSWORD})
                assert r.status_code == 200 and r.json()["role"] == "viewer"
            _cli(capsys, data, "users", "disable", "viv")
            assert viv.get("/api/images").status_code == 401
            _cli(capsys, data, "users", "enable", "viv")
            assert viv.get("/api/images").status_code == 200
            _cli(capsys, data, "keys", "revoke", str(made["id"]))
            assert viv.get("/api/images").status_code == 401

        trail = json.loads(_cli(capsys, data, "audit", "--json"))
        actions = [e["action"] for e in trail]
        for done in ("user-added", "key-created", "folder-shared", "user-changed", "key-revoked"):
            assert done in actions
        assert all(e["actor"].startswith("cli") for e in trail if e["action"] == "key-revoked")


def test_a_key_wider_than_the_role_is_refused_by_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    _cli(capsys, data, "users", "add", "ed", "--role", "editor", "--password-stdin", stdin=PASSWORD)
    code = main(
        [
            "keys",
            "create",
            "--user",
            "ed",
            "--name",
            "x",
            "--scope",
            "admin",
            "--data-dir",
            str(data),
        ]
    )
    assert code == 2
    assert "never wider than its owner's role" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("too short\n"))
    short = main(["users", "add", "sam", "--password-stdin", "--data-dir", str(data)])
    assert short == 2
    assert "12 to 256" in capsys.readouterr().err
