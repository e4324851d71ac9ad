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
    from callcentre.runtime import limit_malloc_arenas, tune_gc

    limit_malloc_arenas()  # before any thread exists (see callcentre/runtime.py)
    tune_gc()  # rare full collections with a thousand calls in progress (see callcentre/runtime.py)
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
        asyncio.run(upgrade(cfg.database.url, progress=lambda m: click.echo(m, err=True), default_hotline=_default_hotline(cfg)))
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
        await upgrade(cfg.database.url, progress=lambda m: None, default_hotline=_default_hotline(cfg))
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
@click.option("--ami", "ami_listen", default="127.0.0.1:5038", show_default=True, help="Where the simulated AMI listens (host:port; port 0 picks one).")
@click.option("--agi", "agi_target", default="127.0.0.1:4573", show_default=True, help="The callcentre FastAGI server to call (host:port).")
@click.option("--calls", default=20, show_default=True, type=click.IntRange(0), help="How many calls to place (0: none, just run the PBX until Ctrl-C).")
@click.option("--concurrency", default=5, show_default=True, type=click.IntRange(1), help="Calls in progress at once.")
@click.option("--speed", default=10.0, show_default=True, type=click.FloatRange(0.1), help="Time speed-up: prompts and waits take duration/speed.")
@click.option("--seed", default=1, show_default=True, help="Random seed for the caller mix.")
def simulate(ami_listen: str, agi_target: str, calls: int, concurrency: int, speed: float, seed: int) -> None:
    """Run the PBX simulator: an AMI server and scripted callers that dial in over FastAGI.

    Point a running `callcentre serve` at it (ami.host/ami.port, and CALLCENTRE_AMI_SECRET as the
    secret this simulator accepts, taken from CALLCENTRE_AMI_SECRET too) to see calls flow without an
    Asterisk. Three simulated agents answer on PJSIP/agent1 (after 3 s), PJSIP/agent2 (after 6 s) and
    PJSIP/agent3 (never). Also a load generator.
    """
    import os

    from callcentre.logging import configure_logging
    from callcentre.sim import runner

    configure_logging("warning")
    secret = os.environ.get("CALLCENTRE_AMI_SECRET")
    if not secret:
        click.echo("error: set CALLCENTRE_AMI_SECRET to the secret the simulated AMI should accept", err=True)
        sys.exit(2)
    ami_host, ami_port = _hostport(ami_listen)
    agi_host, agi_port = _hostport(agi_target)
    if ami_host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("error: the simulator only listens on the loopback address", err=True)
        sys.exit(2)

    async def run() -> int:
        if calls == 0:
            from callcentre.sim.ami_server import AMIServer
            from callcentre.sim.pbx import SimPBX

            pbx = SimPBX(agi_host, agi_port, speed=speed)
            for agent in runner.DEFAULT_AGENTS:
                pbx.add_agent(agent)
            server = AMIServer(pbx, "callcentre", secret, port=ami_port)
            port = await server.start()
            click.echo(f"simulated Asterisk: AMI on 127.0.0.1:{port}; press Ctrl-C to stop")
            try:
                await asyncio.Event().wait()
            finally:
                await pbx.aclose()
                await server.stop()
        summary = await runner.run(
            ami_port, agi_host, agi_port, calls, concurrency, speed=speed, progress=click.echo,
            ami_secret=secret, seed=seed,
        )
        return 1 if summary.failed else 0

    try:
        sys.exit(asyncio.run(run()))
    except KeyboardInterrupt:
        sys.exit(130)


def _default_hotline(cfg) -> str:
    """The hotline rows older than hotlines belong to (migration 0006)."""
    from callcentre.domain.hotlines import default_hotline_id

    return default_hotline_id(cfg)


@main.group()
def user() -> None:
    """Agents, supervisors and administrators who log in to the web pages."""


def _password(prompt_text: str, from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt(prompt_text, hide_input=True, confirmation_prompt=True)


@user.command("add")
@click.argument("login")
@click.option("--name", required=True, help="The name shown on the pages.")
@click.option("--role", type=click.Choice(["agent", "supervisor", "admin", "quality"]), required=True)
@click.option("--interface", help="Agents: the dial string of their phone, e.g. PJSIP/agent1.")
@click.option("--skills", default="repair,complaint,fees", show_default=True, help="Agents: comma-separated skills.")
@click.option("--languages", default="zh", show_default=True, help="Agents: comma-separated languages (zh, en).")
@click.option("--senior", is_flag=True, help="Agents: takes repeat and emergency callers first.")
@click.option("--supervisor-interface", help="Supervisors: their own phone, rung for listen/whisper/barge.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.pass_context
def user_add(ctx, login, name, role, interface, skills, languages, senior, supervisor_interface, password_stdin) -> None:
    """Create a user who can log in (the password is asked for, never given on the command line)."""
    cfg = _load(ctx)
    from callcentre.storage.db import create_engine, session_factory, upgrade
    from callcentre.storage.users_repo import UserInvalid, create_user

    password = _password("Password", password_stdin)

    async def run():
        await upgrade(cfg.database.url, progress=None, default_hotline=_default_hotline(cfg))
        engine = create_engine(cfg.database)
        try:
            return await create_user(
                session_factory(engine), login, name, role, password, interface=interface,
                skills=skills if role == "agent" else None, languages=languages if role == "agent" else None,
                senior=senior, supervisor_interface=supervisor_interface,
            )
        finally:
            await engine.dispose()

    try:
        created = asyncio.run(run())
    except UserInvalid as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"user {created.login} ({created.role.value}) created with id {created.id}")


@user.command("passwd")
@click.argument("login")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of standard input.")
@click.pass_context
def user_passwd(ctx, login, password_stdin) -> None:
    """Set a user's password (for example an agent defined in config.yaml)."""
    cfg = _load(ctx)
    from callcentre.storage.db import create_engine, session_factory
    from callcentre.storage.users_repo import UserInvalid, set_password

    password = _password("New password", password_stdin)

    async def run() -> None:
        engine = create_engine(cfg.database)
        try:
            await set_password(session_factory(engine), login, password)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except UserInvalid as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"password of {login} changed")


@main.group()
def report() -> None:
    """Service reports: daily reconciliation and monthly statistics."""


def _hotline_option(cfg, hotline: str | None) -> str | None:
    """--hotline: the id of a configured hotline (a clear error otherwise)."""
    if hotline is None:
        return None
    from callcentre.domain.hotlines import Hotlines

    known = Hotlines.from_config(cfg)
    if hotline not in known:
        raise click.BadParameter(f"no hotline {hotline!r} (configured: {', '.join(known.ids)})", param_hint="--hotline")
    return hotline


@report.command("daily")
@click.option("--date", "day", help="The local date (YYYY-MM-DD); default today.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write the CSV here.")
@click.option("--hotline", help="Only this hotline's tickets and calls (its id in config.yaml); default: all.")
@click.pass_context
def report_daily(ctx, day, csv_path, hotline) -> None:
    """当日盘点: the day's intake, what is not acknowledged or dispatched, what is past its promise,
    and every call that chose repair or complaint without a ticket."""
    from datetime import date as date_cls
    from zoneinfo import ZoneInfo

    cfg = _load(ctx)
    from callcentre.domain.ports import SystemClock
    from callcentre.service.reports_cmd import daily_report
    from callcentre.storage.db import create_engine, session_factory

    try:
        d = date_cls.fromisoformat(day) if day else SystemClock().now().astimezone(ZoneInfo(cfg.centre.timezone)).date()
    except ValueError:
        raise click.BadParameter(f"{day!r} is not YYYY-MM-DD", param_hint="--date") from None
    hotline = _hotline_option(cfg, hotline)

    async def run():
        engine = create_engine(cfg.database)
        try:
            return await daily_report(session_factory(engine), cfg, d, hotline=hotline)
        finally:
            await engine.dispose()

    text, csv_text = asyncio.run(run())
    click.echo(text)
    if csv_path:
        csv_path.write_text(csv_text, encoding="utf-8")
        click.echo(f"CSV written to {csv_path}", err=True)


@report.command("monthly")
@click.option("--month", required=True, help="YYYY-MM")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"), show_default=True)
@click.option("--hotline", help="Only this hotline's tickets and calls (its id in config.yaml); default: all.")
@click.pass_context
def report_monthly(ctx, month, out_dir, hotline) -> None:
    """Monthly statistics by category, department, building and agent, as CSV and SVG charts."""
    import re

    cfg = _load(ctx)
    from callcentre.service.reports_cmd import monthly_report
    from callcentre.storage.db import create_engine, session_factory

    m = re.fullmatch(r"(\d{4})-(\d{2})", month)
    if not m or not 1 <= int(m[2]) <= 12:
        raise click.BadParameter(f"{month!r} is not YYYY-MM", param_hint="--month")
    hotline = _hotline_option(cfg, hotline)

    async def run():
        engine = create_engine(cfg.database)
        try:
            return await monthly_report(session_factory(engine), cfg, int(m[1]), int(m[2]), out_dir, hotline=hotline)
        finally:
            await engine.dispose()

    for path in asyncio.run(run()):
        click.echo(str(path))


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
