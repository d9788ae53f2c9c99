"""``pipelines-sandbox``: run the sandbox from the command line.

    pipelines-sandbox serve [--host 127.0.0.1] [--port 8765] [--config FILE.json] [--manual-clock]
    pipelines-sandbox connections --url http://127.0.0.1:8765

``serve`` prints the ``export AIRFLOW_CONN_...='...'`` lines, then a ready line with the URL, and
serves until SIGINT/SIGTERM. ``--port 0`` picks a free port.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from collections.abc import Iterator, Sequence
from typing import Any

DEFAULT_PORT = 8765
READY_PREFIX = "pipelines-sandbox ready at "


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipelines-sandbox",
        description="Local emulator of the Cognite, Edge Impulse and HERE pipeline APIs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the sandbox until SIGINT/SIGTERM")
    serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 = free port)"
    )
    serve.add_argument("--config", metavar="FILE.json", help="configuration patch (see docs/sandbox.md)")
    serve.add_argument("--manual-clock", action="store_true", help="start with a frozen simulation clock")
    serve.add_argument("--log-level", default="warning", help="uvicorn log level (default warning)")
    serve.add_argument("--access-log", action="store_true", help="print one line per request")
    conns = sub.add_parser("connections", help="print the export lines for a sandbox URL")
    conns.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}")
    return parser


def _load_config(path: str | None, manual_clock: bool) -> dict[str, Any]:
    config: dict[str, Any] = {}
    if path:
        with open(path, encoding="utf-8") as handle:
            loaded = json.load(handle)
        if not isinstance(loaded, dict):
            raise SystemExit(f"pipelines-sandbox: {path} must contain a JSON object")
        config = loaded
    if manual_clock:
        config["clock"] = {**config.get("clock", {}), "mode": "manual"}
    return config


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from airflow_provider_pipelines.sandbox.app import create_app
    from airflow_provider_pipelines.sandbox.config import ConfigError
    from airflow_provider_pipelines.sandbox.connections import export_lines
    from airflow_provider_pipelines.sandbox.faults import install_log_filter
    from airflow_provider_pipelines.sandbox.server import bind_socket, url_for

    try:
        app = create_app(_load_config(args.config, args.manual_clock))
    except (OSError, ValueError, ConfigError) as exc:
        print(f"pipelines-sandbox: invalid configuration: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(args.host, args.port)
    except OSError as exc:
        print(f"pipelines-sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    port = sock.getsockname()[1]
    url = url_for(args.host, port)

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # Like uvicorn's, minus re-raising the signal after the graceful shutdown: exit code 0.
            handled = [signal.SIGINT, signal.SIGTERM]
            original = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: list[Any] | None = None) -> None:
            await super().startup(sockets=sockets)
            if self.started:
                for line in export_lines(url):
                    print(line)
                print(f"{READY_PREFIX}{url}", flush=True)

    config = uvicorn.Config(
        app,
        log_level=args.log_level,
        access_log=args.access_log,
        lifespan="off",
        http="h11",
        loop="asyncio",
        timeout_graceful_shutdown=1,
    )
    install_log_filter()
    _Server(config).run(sockets=[sock])
    print("pipelines-sandbox stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "connections":
        from airflow_provider_pipelines.sandbox.connections import export_lines

        for line in export_lines(args.url):
            print(line)
        return 0
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
