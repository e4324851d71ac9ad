"""The ``callcentre`` command line. Every command has ``--help``."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from callcentre import __version__
from callcentre.config import Config, ConfigError, load_config


def _load(ctx: click.Context) -> Config:
    obj = ctx.ensure_object(dict)
    if "cfg" not in obj:
        path = obj.get("config_path")
        try:
            obj["cfg"] = load_config(path)
        except ConfigError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)
    return obj["cfg"]


def _default_config_path() -> Path | None:
    p = Path("config.yaml")
    return p if p.exists() else None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-c",
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="CALLCENTRE_CONFIG",
    help="Configuration file (default: ./config.yaml if present, else built-in defaults). "
    "Keys can be overridden with CALLCENTRE_<SECTION>__<KEY> environment variables.",
)
@click.version_option(__version__, prog_name="callcentre")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None) -> None:
    """Call-centre server for property-management service hotlines on Asterisk."""
    ctx.ensure_object(dict)["config_path"] = config_path or _default_config_path()


def _setup_logging(cfg: Config, level: str | None = None) -> None:
    from callcentre.logging import configure_logging

    configure_logging(level or cfg.logging.level, cfg.logging.format)


@main.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Run the server: FastAGI listener, AMI link, web API and pages.

    Applies pending database migrations first. Stops cleanly on Ctrl-C or SIGTERM: no new calls are
    taken and calls in progress are allowed to finish.
    """
    cfg = _load(ctx)
    _setup_logging(cfg)
    from callcentre.app import serve as run_server

    try:
        asyncio.run(run_server(cfg))
    except OSError as exc:
        click.echo(f"error: cannot start: {exc.strerror or exc}", err=True)
        sys.exit(1)


@main.command("check-config")
@click.pass_context
def check_config(ctx: click.Context) -> None:
    """Validate the configuration and print the effective values (secrets hidden)."""
    cfg = _load(ctx)
    import yaml

    data = cfg.model_dump(mode="json")
    for section, key in (("ami", "secret"), ("web", "session_key")):
        if data[section].get(key):
            data[section][key] = "***"
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    click.echo("configuration is valid", err=True)


@main.group()
def db() -> None:
    """Database schema commands."""


@db.command("upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Apply every pending schema migration (Alembic) to the configured database."""
    cfg = _load(ctx)
    from callcentre.storage.db import upgrade

    try:
        asyncio.run(upgrade(cfg.database.url, progress=lambda m: click.echo(m, err=True)))
    except Exception as exc:  # report any driver error plainly
        click.echo(f"error: migration failed: {exc}", err=True)
        sys.exit(1)
    click.echo("database is up to date", err=True)


@main.group()
def owners() -> None:
    """The owner directory."""


@owners.command("import")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def owners_import(ctx: click.Context, csv_file: Path) -> None:
    """Import owners, units, phones and fee balances from CSV_FILE (see docs/owners-csv.md).

    All or nothing: if any row is bad, every bad row is listed with its line number and nothing is
    written.
    """
    cfg = _load(ctx)
    from callcentre.owners_import import ImportFailed, import_owners
    from callcentre.storage.db import create_engine, session_factory, upgrade

    async def run() -> object:
        await upgrade(cfg.database.url, progress=lambda m: None)
        engine = create_engine(cfg.database)
        try:
            return await import_owners(
                session_factory(engine),
                csv_file,
                country_code=cfg.centre.country_code,
                trunk_prefix=cfg.centre.trunk_prefix,
                area_code=cfg.centre.area_code,
                progress=lambda msg: click.echo(msg, err=True),
            )
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(run())
    except ImportFailed as exc:
        click.echo(f"error: {csv_file}: nothing imported; {len(exc.errors)} bad row(s):", err=True)
        for err in exc.errors:
            click.echo(f"  line {err.line}: {err.reason}", err=True)
        sys.exit(1)
    click.echo(str(report))


@main.command()
@click.option("--ami", "ami_listen", default="127.0.0.1:5038", show_default=True, help="Where the simulated AMI listens (host:port).")
@click.option("--agi", "agi_target", default="127.0.0.1:4573", show_default=True, help="The callcentre FastAGI server to call (host:port).")
@click.option("--calls", default=20, show_default=True, type=click.IntRange(0), help="How many calls to place (0: none, just run the PBX).")
@click.option("--concurrency", default=5, show_default=True, type=click.IntRange(1), help="Calls in progress at once.")
@click.option("--speed", default=10.0, show_default=True, type=click.FloatRange(0.1), help="Time speed-up: prompts and waits take duration/speed.")
@click.option("--secret", envvar="CALLCENTRE_AMI_SECRET", default="demo-secret", show_default=True, help="AMI secret the simulator accepts.")
@click.option("--seed", default=1, show_default=True, help="Random seed for the caller mix.")
def simulate(ami_listen: str, agi_target: str, calls: int, concurrency: int, speed: float, secret: str, seed: int) -> None:
    """Run the PBX simulator: an AMI server and scripted callers that dial in over FastAGI.

    Point a running `callcentre serve` at it (ami.host/ami.port) to see calls flow without an Asterisk;
    also a load generator.
    """
    from callcentre.logging import configure_logging
    from callcentre.sim.runner import simulate_main

    configure_logging("warning")
    ami_host, ami_port = _hostport(ami_listen)
    agi_host, agi_port = _hostport(agi_target)
    rc = asyncio.run(
        simulate_main(
            ami_host=ami_host, ami_port=ami_port, agi_host=agi_host, agi_port=agi_port, calls=calls,
            concurrency=concurrency, speed=speed, secret=secret, seed=seed,
            progress=lambda m: click.echo(m),
        )
    )
    sys.exit(rc)


@main.command()
@click.option("--calls", default=12, show_default=True, type=click.IntRange(1), help="How many simulated calls.")
@click.option("--speed", default=20.0, show_default=True, type=click.FloatRange(0.1), help="Time speed-up of the simulated calls.")
@click.option("--keep-running", is_flag=True, help="Keep the server up after the calls (web pages on the configured port).")
@click.pass_context
def demo(ctx: click.Context, calls: int, speed: float, keep_running: bool) -> None:
    """Run the server and the PBX simulator together, with a demo owner directory.

    A newcomer sees calls flow and tickets appear without an Asterisk. Uses a throw-away SQLite
    database unless a database URL is configured.
    """
    cfg = _load(ctx)
    from callcentre.demo import run_demo
    from callcentre.logging import configure_logging

    configure_logging("warning", cfg.logging.format)
    rc = asyncio.run(run_demo(cfg, calls=calls, speed=speed, keep_running=keep_running, echo=click.echo))
    sys.exit(rc)


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not host:port") from None


if __name__ == "__main__":
    main()
