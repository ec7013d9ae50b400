"""The `shardcast` command: `serve` runs the broker, `make-config` writes an ini template."""

from __future__ import annotations

import dataclasses
import os
import secrets

import click

from shardcast import __version__, logs
from shardcast.config import Config, ConfigError, env_var, load_config, render_ini
from shardcast.signing import sign_compat

_WILDCARD_HOSTS = ("", "0.0.0.0", "::")


class BadConfig(click.ClickException):
    """A configuration problem: exits with status 2, like a usage error, without the usage."""

    exit_code = 2

    def format_message(self) -> str:
        return f"invalid configuration: {self.message}"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shardcast")
def main() -> None:
    """shardcast: a Channelstream-compatible websocket broker, sharded over processes."""


@main.command()
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="ini file with a [shardcast] section (see make-config).")
@click.option("--host", help="Bind address of the API and websocket ports.")
@click.option("--port", type=int, help="HTTP API port.")
@click.option("--ws-port-base", type=int, help="Shard i serves websockets on this + i.")
@click.option("--workers", type=int, help="Number of shard processes.")
@click.option("--secret", help="Shared secret that signs API calls.")
@click.option("--log-level", help="debug, info, warning or error.")
@click.option("--log-format", help="text, or json (one JSON object per line).")
@click.option("--redis-url", help="Redis that joins nodes into one cluster "
              "(redis://host:port/db).")
@click.option("--node-id", help="This node's name in the cluster.")
def serve(config_path: str | None, **overrides: object) -> None:
    """Run the broker until SIGINT or SIGTERM.

    Settings come from, highest first: these flags, SHARDCAST_<KEY> environment
    variables, the config file, built-in defaults.
    """
    try:
        config = load_config(config_path, overrides)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    logs.setup(config.log_level, config.log_format, "supervisor")
    if not config.secret:
        config = dataclasses.replace(config, secret=secrets.token_urlsafe(24))
        _warn_random_secret(config)

    from shardcast.supervisor import serve as run_server  # the heavy part, loaded on demand

    run_server(config)


def _warn_random_secret(config: Config) -> None:
    """Tell the user the random secret, how to set a real one, and how to try the API."""
    host = "127.0.0.1" if config.host in _WILDCARD_HOSTS else config.host
    if ":" in host:
        host = f"[{host}]"
    body = '{"username": "alice", "channels": ["lobby"]}'
    # token_urlsafe() output needs no shell quoting beyond the quotes written here.
    one_liner = f"from shardcast.signing import sign_compat; print(sign_compat('{config.secret}'))"
    lifetime = (
        f"this signature expires after {config.signature_max_age:g} s"
        if config.validate_requests
        else "signatures do not expire: validate_requests is off"
    )
    lines = [
        f"WARNING: no secret configured; this run uses a random one: {config.secret}",
        f"  Set your own with --secret, the {env_var('secret')} environment variable,",
        "  or `secret = ...` in the [shardcast] section of a config file (-c FILE).",
        "",
        f"  Try the API ({lifetime}):",
        f"  curl -s -X POST http://{host}:{config.port}/connect"
        f' -H "x-channelstream-secret: {sign_compat(config.secret)}"'
        f" -H 'content-type: application/json' -d '{body}'",
        "",
        "  Make a fresh signature with:",
        f'  python -c "{one_liner}"',
        "",
    ]
    click.echo("\n".join(lines), err=True)


@main.command("make-config")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="File to write (default: standard output).")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def make_config(output: str | None, force: bool) -> None:
    """Write an ini file with every setting, its default and what it does."""
    text = render_ini()
    if output is None:
        click.echo(text, nl=False)
        return
    if os.path.exists(output) and not force:
        raise click.ClickException(f"{output} exists; pass --force to overwrite it")
    with open(output, "w", encoding="utf-8") as file:
        file.write(text)
    click.echo(f"wrote {output}", err=True)


@main.command("dev-cluster")
@click.option("--nodes", default=3, show_default=True, help="Number of nodes.")
@click.option("--workers", default=2, show_default=True, help="Shards per node.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Bind address of the nodes' API and websocket ports.")
@click.option("--port", default=8000, show_default=True, help="API port of node 0; node i: +i.")
@click.option("--ws-port-base", default=8100, show_default=True,
              help="Websocket ports of node 0 start here; node i's at + 100 * i.")
@click.option("--redis-port", default=6399, show_default=True,
              help="Port of the redis-server it starts.")
@click.option("--secret", default=None, help="Shared secret (default: a random one).")
def dev_cluster(nodes: int, workers: int, host: str, port: int, ws_port_base: int,
                redis_port: int, secret: str | None) -> None:
    """Start a local redis-server and several nodes using it: one broker to try out."""
    from shardcast.devcluster import run as run_cluster

    run_cluster(nodes, workers, host, port, ws_port_base, redis_port,
                secret or secrets.token_urlsafe(24))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address of the demo page, the broker API and its websockets.")
@click.option("--port", default=8080, show_default=True, help="Port of the demo chat page.")
@click.option("--api-port", default=8000, show_default=True, help="Port of the broker API.")
@click.option("--ws-port-base", default=8100, show_default=True,
              help="Shard i of the broker serves websockets on this + i.")
@click.option("--workers", default=2, show_default=True, help="Number of broker shards.")
def demo(host: str, port: int, api_port: int, ws_port_base: int, workers: int) -> None:
    """Run a broker and a small chat application in front of it.

    Open the printed URL in two browser windows and chat between them: rooms, presence,
    user status, history, edits and deletes, all through shardcast.
    """
    logs.setup("warning", "text", "demo")
    from shardcast.demo import run as run_demo

    run_demo(host, port, api_port, ws_port_base, workers)
