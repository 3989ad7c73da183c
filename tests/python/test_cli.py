"""The `steward` command line against a running server (STEWARD_ADDR / STEWARD_TOKEN)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import uuid

import pytest

from steward_testlib import STEWARD_BIN, free_port, run_cli


def uniq(prefix: str = "cli") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r


def put(server, target: str, value: str, *flags: str) -> subprocess.CompletedProcess:
    return ok(server.cli("secret", "put", target, *flags, input=value))


def test_put_from_stdin_and_get(server):
    target = f"dev/{uniq()}/password"
    r = put(server, target, "s3cret-from-stdin\n")
    assert "version 1" in r.stdout
    # One trailing newline is dropped; the value itself never appears in argv.
    assert ok(server.cli("secret", "get", target)).stdout == "s3cret-from-stdin\n"
    d = server.read(*target.split("/", 1)).json()["data"]
    assert d["data"] == {"value": "s3cret-from-stdin"}
    assert d["value_type"] == "string"


def test_put_from_file(server, tmp_path):
    target = f"staging/{uniq()}/cert"
    f = tmp_path / "value.txt"
    f.write_text("line one\nline two\n")
    r = ok(server.cli("secret", "put", target, "--file", str(f), input=""))
    assert "version 1" in r.stdout
    assert server.read(*target.split("/", 1)).json()["data"]["data"] == {"value": "line one\nline two"}
    assert ok(server.cli("secret", "get", target)).stdout == "line one\nline two\n"


def test_get_field_of_json_value(server):
    target = f"prod/{uniq()}/smtp"
    put(server, target, json.dumps({"user": "mailer", "password": "pw-123", "port": 587}), "--json")
    assert ok(server.cli("secret", "get", target, "--field", "user")).stdout == "mailer\n"
    assert ok(server.cli("secret", "get", target, "--field", "password")).stdout == "pw-123\n"
    assert ok(server.cli("secret", "get", target, "--field", "port")).stdout == "587\n"
    whole = json.loads(ok(server.cli("secret", "get", target)).stdout)
    assert whole == {"user": "mailer", "password": "pw-123", "port": 587}
    r = server.cli("secret", "get", target, "--field", "nope")
    assert r.returncode != 0 and "nope" in r.stderr
    # --json refuses what is not an object.
    r = server.cli("secret", "put", target, "--json", input="[1, 2]")
    assert r.returncode != 0
    r = server.cli("secret", "put", target, "--json", input="{not json")
    assert r.returncode != 0
    assert server.read(*target.split("/", 1)).json()["data"]["metadata"]["version"] == 1


def test_list_json(server):
    root = uniq("list")
    for p in ("a", "b", "sub/c"):
        put(server, f"prod/{root}/{p}", "v")
    keys = json.loads(ok(server.cli("secret", "list", f"prod/{root}", "-o", "json")).stdout)
    assert sorted(keys) == ["a", "b", "sub/"]
    top = json.loads(ok(server.cli("secret", "list", "prod", "-o", "json")).stdout)
    assert f"{root}/" in top
    # An empty listing is an empty list, not an error.
    assert json.loads(ok(server.cli("secret", "list", f"prod/{uniq('empty')}", "-o", "json")).stdout) == []
    human = ok(server.cli("secret", "list", f"prod/{root}")).stdout.split()
    assert sorted(human) == ["a", "b", "sub/"]


def test_history_and_rollback(server):
    target = f"dev/{uniq()}/api_key"
    for v in ("first", "second", "third"):
        put(server, target, v)
    h = json.loads(ok(server.cli("secret", "history", target, "-o", "json")).stdout)
    assert h["current_version"] == 3
    assert sorted(h["versions"], key=int) == ["1", "2", "3"]

    r = ok(server.cli("secret", "rollback", target, "--to", "1"))
    assert "version 4" in r.stdout
    assert ok(server.cli("secret", "get", target)).stdout == "first\n"
    assert ok(server.cli("secret", "get", target, "--version", "3")).stdout == "third\n"
    h = json.loads(ok(server.cli("secret", "history", target, "-o", "json")).stdout)
    assert h["current_version"] == 4
    human = ok(server.cli("secret", "history", target)).stdout
    assert "current version 4" in human
    # Rolling back to a version that does not exist fails and writes nothing.
    r = server.cli("secret", "rollback", target, "--to", "99")
    assert r.returncode == 4, r.stderr
    assert json.loads(ok(server.cli("secret", "history", target, "-o", "json")).stdout)["current_version"] == 4


def test_delete_undelete_destroy(server):
    target = f"dev/{uniq()}/token"
    put(server, target, "v1")
    put(server, target, "v2")

    ok(server.cli("secret", "delete", target))
    r = server.cli("secret", "get", target)
    assert r.returncode == 4, r.stderr
    assert ok(server.cli("secret", "get", target, "--version", "1")).stdout == "v1\n"

    ok(server.cli("secret", "undelete", target, "--versions", "2"))
    assert ok(server.cli("secret", "get", target)).stdout == "v2\n"

    ok(server.cli("secret", "delete", target, "--versions", "1"))
    assert server.cli("secret", "get", target, "--version", "1").returncode == 4
    ok(server.cli("secret", "undelete", target, "--versions", "1"))
    assert ok(server.cli("secret", "get", target, "--version", "1")).stdout == "v1\n"

    ok(server.cli("secret", "destroy", target, "--versions", "1"))
    assert server.cli("secret", "get", target, "--version", "1").returncode == 4
    ok(server.cli("secret", "undelete", target, "--versions", "1"))
    assert server.cli("secret", "get", target, "--version", "1").returncode == 4
    h = json.loads(ok(server.cli("secret", "history", target, "-o", "json")).stdout)
    assert h["versions"]["1"]["destroyed"] is True
    assert "destroyed" in ok(server.cli("secret", "history", target)).stdout
    assert ok(server.cli("secret", "get", target)).stdout == "v2\n"


def test_exit_code_not_found(server):
    r = server.cli("secret", "get", f"prod/{uniq('missing')}/x")
    assert r.returncode == 4, (r.stdout, r.stderr)
    assert "no secret" in r.stderr
    assert server.cli("secret", "history", f"prod/{uniq('missing')}/x").returncode == 4


@pytest.mark.parametrize("token", ["stw.bogus", ""])
def test_exit_code_bad_token(server, token):
    target = f"prod/{uniq()}/x"
    put(server, target, "v")
    env = {"STEWARD_DATA": str(server.workdir / "no-such-dir")}  # no root-token fallback
    r = server.cli("secret", "get", target, token=token, env=env)
    assert r.returncode == 5, (r.stdout, r.stderr)
    assert "token" in r.stderr
    r = server.cli("secret", "put", target, token=token, env=env, input="other")
    assert r.returncode == 5
    assert server.read(*target.split("/", 1)).json()["data"]["data"] == {"value": "v"}


def test_exit_code_forbidden(server):
    target = f"prod/{uniq()}/x"
    put(server, target, "v")
    r = server.api("POST", "/v1/auth/token/create", json={"policies": [], "ttl": "10m"})
    token = r.json()["auth"]["client_token"]
    r = server.cli("secret", "get", target, token=token)
    assert r.returncode == 5, (r.stdout, r.stderr)


def test_exit_code_cas_conflict(server):
    target = f"prod/{uniq()}/x"
    put(server, target, "original")
    r = server.cli("secret", "put", target, "--cas", "0", input="clobber")
    assert r.returncode == 6, (r.stdout, r.stderr)
    r = server.cli("secret", "put", target, "--cas", "5", input="clobber")
    assert r.returncode == 6, (r.stdout, r.stderr)
    assert ok(server.cli("secret", "get", target)).stdout == "original\n"
    r = ok(server.cli("secret", "put", target, "--cas", "1", input="next"))
    assert "version 2" in r.stdout


def test_exit_code_server_down(server):
    addr = f"http://127.0.0.1:{free_port()}"
    r = server.cli("secret", "get", "prod/x/y", addr=addr)
    assert r.returncode == 7, (r.stdout, r.stderr)
    assert addr in r.stderr
    r = server.cli("secret", "put", "prod/x/y", addr=addr, input="v")
    assert r.returncode == 7


def test_usage_errors(server):
    r = server.cli("secret", "get")
    assert r.returncode == 2
    r = server.cli("secret", "get", "no-slash-here")
    assert r.returncode == 2, (r.stdout, r.stderr)
    r = server.cli("secret", "put", "prod/../etc", input="v")
    assert r.returncode == 2, (r.stdout, r.stderr)
    r = server.cli("secret", "put", "nosuchenv/x", input="v")
    assert r.returncode != 0


def test_run_injects_env_only_into_child(server):
    put(server, "prod/billing/db_password", "db-pw-for-run")
    put(server, "prod/billing/smtp", json.dumps({"user": "billing-mailer"}), "--json")
    r = ok(server.cli("run", "--env", "prod", "--prefix", "billing/", "--", "sh", "-c", "echo $DB_PASSWORD"))
    assert r.stdout == "db-pw-for-run\n"

    # Object values become NAME_FIELD; the child does not get the token.
    r = ok(server.cli(
        "run", "--env", "prod", "--prefix", "billing/", "--",
        "sh", "-c", 'echo "$SMTP_USER|${STEWARD_TOKEN:-no-token}"',
    ))
    assert r.stdout == "billing-mailer|no-token\n"

    # The child's exit code is passed on.
    r = server.cli("run", "--env", "prod", "--prefix", "billing/", "--", "sh", "-c", "exit 3")
    assert r.returncode == 3

    # The calling shell's environment is untouched.
    script = (
        f"{shlex.quote(STEWARD_BIN)} run --env prod --prefix billing/ -- sh -c 'echo child:$DB_PASSWORD'; "
        "echo parent:${DB_PASSWORD:-unset}"
    )
    r = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=server.cli_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["child:db-pw-for-run", "parent:unset"]
    assert "DB_PASSWORD" not in os.environ


def test_template_render_to_file(server, tmp_path):
    root = uniq("tpl")
    put(server, f"prod/{root}/db", "tpl-db-pw")
    put(server, f"prod/{root}/smtp", json.dumps({"user": "tpl-user"}), "--json")
    tpl = tmp_path / "app.conf.tpl"
    tpl.write_text(f"db=${{secret:prod/{root}/db}}\nsmtp_user=${{secret:prod/{root}/smtp#user}}\nplain=1\n")
    out = tmp_path / "app.conf"
    # A pre-existing world-readable file is replaced, not reused.
    out.write_text("old")
    out.chmod(0o644)
    r = ok(server.cli("template", "render", str(tpl), "--out", str(out)))
    assert "tpl-db-pw" not in r.stdout + r.stderr
    assert out.read_text() == "db=tpl-db-pw\nsmtp_user=tpl-user\nplain=1\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert not list(tmp_path.glob("*.steward-tmp"))

    # To stdout.
    r = ok(server.cli("template", "render", str(tpl)))
    assert r.stdout == "db=tpl-db-pw\nsmtp_user=tpl-user\nplain=1\n"

    # A reference to a missing secret fails and writes nothing.
    bad = tmp_path / "bad.tpl"
    bad.write_text(f"x=${{secret:prod/{root}/missing}}\n")
    out2 = tmp_path / "bad.conf"
    r = server.cli("template", "render", str(bad), "--out", str(out2))
    assert r.returncode != 0
    assert not out2.exists()


def test_export_dotenv_and_json(server):
    root = uniq("exp")
    put(server, f"staging/{root}/db_password", 'p"w\\1')
    put(server, f"staging/{root}/multi", "a\nb")
    put(server, f"staging/{root}/smtp", json.dumps({"user": "u1", "port": 25}), "--json")

    r = ok(server.cli("export", "--env", "staging", "--prefix", f"{root}/", "--format", "dotenv"))
    lines = r.stdout.splitlines()
    assert lines == [
        'DB_PASSWORD="p\\"w\\\\1"',
        'MULTI="a\\nb"',
        'SMTP_PORT="25"',
        'SMTP_USER="u1"',
    ]
    r = ok(server.cli("export", "--env", "staging", "--prefix", f"{root}/", "--format", "json"))
    assert json.loads(r.stdout) == {
        "DB_PASSWORD": 'p"w\\1',
        "MULTI": "a\nb",
        "SMTP_PORT": "25",
        "SMTP_USER": "u1",
    }
    # dotenv is the default.
    assert ok(server.cli("export", "--env", "staging", "--prefix", f"{root}/")).stdout.splitlines() == lines


def test_completions_and_help():
    r = run_cli(["completions", "bash"])
    assert r.returncode == 0, r.stderr
    assert len(r.stdout) > 100 and "steward" in r.stdout
    r = run_cli(["--help"])
    assert r.returncode == 0, r.stderr
    assert "secret" in r.stdout
    assert "Exit codes" in r.stdout
    r = run_cli(["secret", "--help"])
    assert r.returncode == 0 and "put" in r.stdout and "rollback" in r.stdout


def test_token_and_audit_commands(server):
    r = ok(server.cli("token", "create", "--policy", "nothing", "--ttl", "10m", "-o", "json"))
    auth = json.loads(r.stdout)
    assert auth["client_token"].startswith("stw.")
    looked = json.loads(ok(server.cli("token", "lookup", "-o", "json", token=auth["client_token"])).stdout)
    assert looked["accessor"] == auth["accessor"]
    assert looked["policies"] == ["nothing"]
    assert auth["client_token"] not in json.dumps(looked)
    r = ok(server.cli("audit", "verify"))
    assert "intact" in r.stdout


def test_export_dotenv_is_safe_to_source(server, tmp_path):
    root = uniq("src")
    tricky = {
        "dollar": "pa$HOME$(touch pwned)",
        "backtick": "a`touch pwned`b",
        "quotes": "it's \"quoted\" \\ back",
    }
    for k, v in tricky.items():
        put(server, f"staging/{root}/{k}", v)
    r = ok(server.cli("export", "--env", "staging", "--prefix", f"{root}/", "--format", "dotenv"))
    env_file = tmp_path / "app.env"
    env_file.write_text(r.stdout)
    script = f". {shlex.quote(str(env_file))}; printf '%s\\n' \"$DOLLAR\" \"$BACKTICK\" \"$QUOTES\""
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [tricky["dollar"], tricky["backtick"], tricky["quotes"]]
    assert not (tmp_path / "pwned").exists()


def test_run_passes_sigterm_to_the_child(server):
    """`kill <steward run>` (what a supervisor does) reaches the child, which can clean up; the
    child's own exit code comes back. Without forwarding the child would be orphaned."""
    import signal
    import time

    put(server, "prod/sig/k", "v")
    script = 'trap "echo got-term; exit 7" TERM; echo ready; while true; do sleep 0.05; done'
    p = subprocess.Popen(
        [STEWARD_BIN, "run", "--env", "prod", "--prefix", "sig/", "--", "sh", "-c", script],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=server.cli_env(),
        start_new_session=True,  # not in pytest's process group: only steward gets the signal
    )
    try:
        assert p.stdout.readline().strip() == "ready"
        time.sleep(0.2)
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert "got-term" in out, (out, err)
    assert p.returncode == 7, (p.returncode, err)


def test_a_closed_stdout_ends_quietly():
    """`steward ... | head` closes the pipe early: exit 141 (as SIGPIPE would), no panic text."""
    p = subprocess.Popen([STEWARD_BIN, "completions", "bash"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # the reader goes away before anything is read
    _, err = p.communicate(timeout=30)
    assert p.returncode == 141, (p.returncode, err)
    assert b"panicked" not in err and b"Broken pipe" not in err, err
