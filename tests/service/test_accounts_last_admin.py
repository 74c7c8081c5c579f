"""Nobody locks themselves out: disabling, demoting or deleting the last active admin is refused
(409 saying why, on a real socket; an error on the command line), and works once another admin
exists."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from accounts_testlib import add_user, served_library, sign_in

from clipsearch.service.cli import main


def _cli(capsys: pytest.CaptureFixture[str], data: Path, *args: str) -> tuple[int, str]:
    old = sys.stdin
    sys.stdin = io.StringIO("")
    try:
        code = main([*args, "--data-dir", str(data)])
    finally:
        sys.stdin = old
    out = capsys.readouterr()
    return code, out.out + out.err


def test_the_last_active_admin_cannot_be_disabled_demoted_or_deleted(
    tmp_path: Path, tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with served_library(tmp_path, tiny_model_dir) as served:
        add_user(served, "ada", "admin")
        add_user(served, "vic", "viewer")
        ada = sign_in(served, "ada")
        with served.admin() as token:
            # the API: every way of taking away the only admin is a 409 that says why
            for method, url, body in (
                ("PATCH", "/api/users/ada", {"disabled": True}),
                ("PATCH", "/api/users/ada", {"role": "editor"}),
                ("PATCH", "/api/users/ada", {"role": "viewer"}),
                ("DELETE", "/api/users/ada", None),
            ):
                for caller in (token, ada):  # the token, and the admin on themselves
                    r = caller.request(method, url, json=body)
                    assert r.status_code == 409, (method, body, r.status_code, r.text)
                    assert "last active admin" in r.json()["detail"]
            assert ada.get("/api/users").status_code == 200  # still an admin, still signed in
            listed = {u["name"]: u for u in token.get("/api/users").json()}
            assert listed["ada"]["role"] == "admin" and not listed["ada"]["disabled"]

            # the command line refuses the same, with the same reason
            data = Path(served.settings.catalog.data_dir)
            for args in (
                ("users", "disable", "ada"),
                ("users", "role", "ada", "--to", "viewer"),
                ("users", "delete", "ada"),
            ):
                code, said = _cli(capsys, data, *args)
                assert code != 0 and "last active admin" in said, (args, code, said)
            assert sign_in(served, "ada").get("/api/users").status_code == 200

            # a disabled admin does not count as one who could take over
            add_user(served, "bea", "admin")
            r = token.patch("/api/users/bea", json={"disabled": True})
            assert r.status_code == 200 and r.json()["disabled"]
            assert token.patch("/api/users/ada", json={"role": "editor"}).status_code == 409

            # with another active admin, each change is allowed
            assert token.patch("/api/users/bea", json={"disabled": False}).status_code == 200
            r = ada.patch("/api/users/ada", json={"role": "editor"})
            assert r.status_code == 200 and r.json()["role"] == "editor"
            # now bea is the last one
            assert token.delete("/api/users/bea").status_code == 409
            code, said = _cli(capsys, data, "users", "role", "ada", "--to", "admin")
            assert code == 0, said
            r = token.delete("/api/users/bea")
            assert r.status_code == 200 and r.json()["name"] == "bea"
            assert "bea" not in {u["name"] for u in token.get("/api/users").json()}
            code, said = _cli(capsys, data, "users", "delete", "vic")
            assert code == 0 and "deleted vic" in said
            actions = [e["action"] for e in token.get("/api/audit").json()]
            assert actions.count("user-deleted") == 2
