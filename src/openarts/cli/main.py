"""The `openarts` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from openarts.cli import client
from openarts.cli import credentials as credentials_cli


def default_data_dir() -> Path:
    return Path(os.environ.get("OPENARTS_DATA_DIR", "~/.openarts")).expanduser()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openarts", description="Self-hosted ModelArts training jobs.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the service in the foreground")
    s.add_argument("--host", default=os.environ.get("OPENARTS_HOST", "127.0.0.1"))
    s.add_argument("--port", type=int, default=int(os.environ.get("OPENARTS_PORT", "8080")))
    s.add_argument("--data-dir", type=Path, default=default_data_dir())
    s.add_argument("--config", type=Path, default=None, help="TOML config (default: DATA_DIR/config.toml)")
    s.add_argument("--log-level", default="info")
    s.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback address without credentials (anyone who reaches it can run code)")
    s.add_argument("--tls-cert", type=Path, default=None, help="serve HTTPS with this certificate (PEM)")
    s.add_argument("--tls-key", type=Path, default=None, help="... and this private key (PEM)")
    client.add_commands(sub)
    credentials_cli.add_commands(sub, default_data_dir())
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from openarts.cli.serve import serve

        return serve(args.host, args.port, args.data_dir, args.config, args.log_level,
                     insecure=args.insecure, tls_cert=args.tls_cert, tls_key=args.tls_key)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
