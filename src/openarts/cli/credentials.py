"""`openarts credentials|token|audit ...`: the security store, managed offline on the data directory.

    openarts credentials create --data-dir DIR --project ID [--project ID2] [--user NAME] [--json]
    openarts credentials list|revoke|password ...
    openarts token create --data-dir DIR (--access-key AK | --user NAME) --project ID [--ttl S] [--json]
    openarts token list|revoke ...
    openarts audit list --data-dir DIR [--project ID] [--limit N] [--json]

These open DATA_DIR/security.db directly (a running server notices changes on its next request).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from openarts.config import load_settings
from openarts.security import audit, db
from openarts.security import credentials as creds
from openarts.security import tokens as toks
from openarts.security.config import SecurityConfig
from openarts.security.secretbox import MasterKeyError, SecretBox, load_master_key

Handler = Callable[[argparse.Namespace], int]


def _cfg(args: argparse.Namespace) -> SecurityConfig:
    return SecurityConfig.from_settings(load_settings(args.data_dir, args.config))


def _engine(cfg: SecurityConfig) -> Engine:
    return db.open_security_db(cfg.db_path)


def _when(ms: int | None) -> str:
    return "" if ms is None else datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _dump(data: Any) -> None:
    print(json.dumps(data, indent=2))


def credentials_create(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    box = SecretBox(load_master_key(cfg.data_dir, cfg.master_key_file))
    cred, secret = creds.create(_engine(cfg), box, args.project, args.user, args.description)
    if args.json:
        _dump({"access_key": cred.access_key, "secret_key": secret, "project_id": cred.projects[0],
               "user_name": cred.user_name, "projects": list(cred.projects)})
    else:
        print(f"access key:  {cred.access_key}\nsecret key:  {secret}\nuser:        {cred.user_name}\n"
              f"projects:    {', '.join(cred.projects)}\n"
              "The secret key is shown only this once; store it now.")
    return 0


def credentials_list(args: argparse.Namespace) -> int:
    items = creds.list_all(_engine(_cfg(args)))
    if args.json:
        _dump([c.as_json() for c in items])
        return 0
    print(f"{'ACCESS KEY':<22}{'USER':<20}{'STATE':<9}{'CREATED':<22}PROJECTS")
    for c in items:
        state = "active" if c.active else "revoked"
        print(f"{c.access_key:<22}{c.user_name:<20}{state:<9}{_when(c.created_at):<22}{','.join(c.projects)}")
    return 0


def credentials_revoke(args: argparse.Namespace) -> int:
    if not creds.revoke(_engine(_cfg(args)), args.access_key):
        print(f"error: no active access key {args.access_key}", file=sys.stderr)
        return 1
    print(f"revoked {args.access_key} and the tokens it issued")
    return 0


def credentials_password(args: argparse.Namespace) -> int:
    if sys.stdin.isatty():
        password = getpass.getpass(f"new password for {args.user}: ")
        if getpass.getpass("again: ") != password:
            print("error: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\n")
    creds.set_password(_engine(_cfg(args)), args.user, password)
    print(f"password set for {args.user}")
    return 0


def token_create(args: argparse.Namespace) -> int:
    cfg = _cfg(args)
    engine = _engine(cfg)
    if args.access_key:
        cred = next((c for c in creds.list_all(engine) if c.access_key == args.access_key and c.active), None)
        if cred is None:
            raise creds.CredentialError(f"no active access key {args.access_key}")
        user, issued_by, allowed = cred.user_name, cred.access_key, set(cred.projects)
    elif args.user:
        with engine.connect() as conn:
            allowed = creds.user_projects(conn, args.user)
        user, issued_by = args.user, "cli"
    else:
        raise creds.CredentialError("give --access-key or --user")
    if args.project not in allowed:
        raise creds.CredentialError(f"{user} holds no active access key for project {args.project}")
    with engine.begin() as conn:
        token, rec = toks.issue(conn, user, args.project, args.ttl, "cli", issued_by)
    if args.json:
        _dump({"token": token, **rec.as_json()})
    else:
        print(f"token:       {token}\ntoken id:    {rec.token_id}\nuser:        {user}\nproject:     {args.project}\n"
              f"expires:     {_when(rec.expires_at)}\nSend it as the X-Auth-Token header; it is shown only once.")
    return 0


def token_list(args: argparse.Namespace) -> int:
    items = toks.list_all(_engine(_cfg(args)), include_expired=args.all)
    if args.json:
        _dump([t.as_json() for t in items])
        return 0
    print(f"{'TOKEN ID':<22}{'USER':<20}{'PROJECT':<34}{'EXPIRES':<22}STATE")
    for t in items:
        state = "revoked" if t.revoked_at else "active"
        print(f"{t.token_id:<22}{t.user_name:<20}{t.project_id:<34}{_when(t.expires_at):<22}{state}")
    return 0


def token_revoke(args: argparse.Namespace) -> int:
    if not toks.revoke(_engine(_cfg(args)), args.token_id):
        print(f"error: no active token {args.token_id}", file=sys.stderr)
        return 1
    print(f"revoked token {args.token_id}")
    return 0


def audit_list(args: argparse.Namespace) -> int:
    items = audit.list_records(_engine(_cfg(args)), args.project, None, args.limit)
    if args.json:
        _dump([r.as_json() for r in items])
        return 0
    print(f"{'WHEN':<22}{'WHO':<24}{'USER':<16}{'STATUS':<7}{'CODE':<16}{'METHOD':<7}PATH  TARGET")
    for r in items:
        print(f"{_when(r.at):<22}{r.principal[:23]:<24}{r.user_name[:15]:<16}{r.status:<7}{r.error_code:<16}"
              f"{r.method:<7}{r.path}  {r.target}")
    return 0


def _guarded(fn: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (creds.CredentialError, MasterKeyError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1

    return run


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser], default_data_dir: Path) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data-dir", type=Path, default=default_data_dir)
    common.add_argument("--config", type=Path, default=None, help="TOML config (default: DATA_DIR/config.toml)")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print JSON")

    def group(name: str, help_: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        p = sub.add_parser(name, help=help_)
        return p.add_subparsers(dest=f"{name}_command", required=True)

    def cmd(g: argparse._SubParsersAction[argparse.ArgumentParser], name: str, fn: Handler, help_: str,
            json_: bool = True) -> argparse.ArgumentParser:
        p = g.add_parser(name, help=help_, parents=[common, as_json] if json_ else [common])
        p.set_defaults(handler=_guarded(fn))
        return p

    c = group("credentials", "access keys (AK/SK) for the server in a data directory")
    p = cmd(c, "create", credentials_create, "create an access key; prints the secret key once")
    p.add_argument("--project", action="append", required=True, help="project id (repeat for more)")
    p.add_argument("--user", default=os.environ.get("USER") or getpass.getuser(), help="user name (default: $USER)")
    p.add_argument("--description", default="")
    cmd(c, "list", credentials_list, "list access keys (never their secrets)")
    p = cmd(c, "revoke", credentials_revoke, "revoke an access key and its tokens", json_=False)
    p.add_argument("access_key")
    p = cmd(c, "password", credentials_password, "set a user's password (for POST /v3/auth/tokens)", json_=False)
    p.add_argument("--user", required=True)

    t = group("token", "X-Auth-Token tokens")
    p = cmd(t, "create", token_create, "issue a token for one project")
    p.add_argument("--access-key", default=None)
    p.add_argument("--user", default=None)
    p.add_argument("--project", required=True)
    p.add_argument("--ttl", type=float, default=86400.0, help="lifetime in seconds (default 86400)")
    p = cmd(t, "list", token_list, "list unexpired, unrevoked tokens")
    p.add_argument("--all", action="store_true", help="also expired and revoked ones")
    p = cmd(t, "revoke", token_revoke, "revoke a token by its id", json_=False)
    p.add_argument("token_id")

    a = group("audit", "the audit log of mutating requests")
    p = cmd(a, "list", audit_list, "the newest audit records, oldest first")
    p.add_argument("--project", default=None)
    p.add_argument("--limit", type=int, default=100)
