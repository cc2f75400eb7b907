"""The `openarts` command."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
from pathlib import Path

from openarts.cli import algorithms as algorithms_cli
from openarts.cli import client, info
from openarts.cli import credentials as credentials_cli
from openarts.config import ConfigError


def default_data_dir() -> Path:
    return Path(os.environ.get("OPENARTS_DATA_DIR", "~/.openarts")).expanduser()


def port_arg(value: str) -> int:
    if not value.isdigit() or not 0 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a TCP port (0 to 65535)")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openarts", description="Self-hosted ModelArts training jobs.")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="run the service in the foreground")
    s.add_argument("--host", default=os.environ.get("OPENARTS_HOST", "127.0.0.1"))
    s.add_argument("--port", type=port_arg, default=os.environ.get("OPENARTS_PORT", "8080"),
                   help="TCP port (env OPENARTS_PORT; default 8080; 0: any free port)")
    s.add_argument("--data-dir", type=Path, default=default_data_dir())
    s.add_argument("--config", type=Path, default=None, help="TOML config (default: DATA_DIR/config.toml)")
    s.add_argument("--log-level", default="info", type=str.lower,
                   choices=("critical", "error", "warning", "info", "debug", "trace"))
    s.add_argument("--log-format", choices=("text", "json"), default=None,
                   help="the server log: text lines or JSON objects with request ids ([server] log_format)")
    s.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback address without credentials (anyone who reaches it can run code)")
    s.add_argument("--tls-cert", type=Path, default=None, help="serve HTTPS with this certificate (PEM)")
    s.add_argument("--tls-key", type=Path, default=None, help="... and this private key (PEM)")
    s.add_argument("--executor", choices=("local", "ray"), default=None,
                   help="where workers run: this machine (default) or a Ray cluster ([server] executor)")
    s.add_argument("--ray-address", default=None, help="the Ray cluster to join ([server] ray_address; default auto)")
    client.add_commands(sub)
    info.add_commands(sub)
    algorithms_cli.add_commands(sub)
    credentials_cli.add_commands(sub, default_data_dir())
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        status = run(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe would print a warning
        return status
    except BrokenPipeError:
        # the reader went away (`openarts list | head`): stop quietly, as a command killed by SIGPIPE would,
        # and keep the interpreter from complaining when it flushes stdout on exit
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except ConfigError as exc:
        print(f"openarts: {exc}", file=sys.stderr)
        return 2


def run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "serve":
        from openarts.cli.serve import serve

        return serve(args.host, args.port, args.data_dir, args.config, args.log_level,
                     insecure=args.insecure, tls_cert=args.tls_cert, tls_key=args.tls_key,
                     executor=args.executor, ray_address=args.ray_address, log_format=args.log_format)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
