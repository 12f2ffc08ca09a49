"""`devops-cp serve`: the control panel's page and routes, served by uvicorn."""

from __future__ import annotations

import sys

import click

from manifests.errors import DataPackError

TOKEN_FILE = "web-token"  # in the state directory, when `serve` does not print to a terminal


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; keep the loopback default unless you must.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port.")
def serve(host: str, port: int) -> None:
    """Serve the data-packs control panel (install, sideload, live progress) on HOST:PORT."""
    from devops_cp.app import App
    from devops_cp.web import bind, create_app, is_loopback, uvicorn_server, web_settings

    try:
        config = App().config
        settings, generated = web_settings(config, host=host)
    except DataPackError as exc:
        click.echo(f"error: {exc}", err=True)
        raise SystemExit(exc.exit_code) from None
    try:
        sock = bind(host, port)
    except OSError as exc:
        click.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
        raise SystemExit(5 if exc.errno in (13,) else 2) from None
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    url = f"http://{shown}:{sock.getsockname()[1]}/"
    if not is_loopback(host):
        click.echo(f"warning: listening on {host}: anyone who can reach this address and has the token can start installs", err=True)
    token_file = None
    if generated and not sys.stdout.isatty():  # output that may go to a log file or a journal: the token goes to a file of this user's only
        from executor.config import state_dir
        from executor.keys import write_private_file

        token_file = state_dir() / TOKEN_FILE
        write_private_file(token_file, settings.token.encode() + b"\n")

    def announce() -> None:
        """Once the socket accepts connections: a URL opened at once is answered."""
        if generated and token_file is None:
            click.echo(f"devops-cp control panel: {url}?token={settings.token}")
            click.echo("  (a new token for this run; set [web] token in the config file to keep one)", err=True)
        elif generated:
            click.echo(f"devops-cp control panel: {url}  (token in {token_file}, mode 0600: it is printed only to a terminal)")
        else:
            click.echo(f"devops-cp control panel: {url}  (token: [web] token in {config.path})")
        if settings.bundle_dirs:
            click.echo("  sideload reads bundles from: " + ", ".join(map(str, settings.bundle_dirs)), err=True)

    uvicorn_server(create_app(settings), on_started=announce).run(sockets=[sock])


def register(main: click.Group, data: click.Group) -> None:
    main.add_command(serve)
