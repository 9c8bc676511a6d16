"""Command line: ``flask --app app user add``, ``token create``, ``audit verify``, ``ae add|list|remove``,
``procedure add|list|import``, ``sweep run``, ``backup db``, ``db copy``, ``import``."""
from __future__ import annotations

import csv
import getpass
import sqlite3
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from .core import audit, db, dbcopy
from .ris import aes, procedures, users
from .pacs import importing, integrity, routing
from . import sweep
from .core.validation import Conflict, NotFound, ValidationError

CLI_ACTOR = audit.Actor("cli")


@contextmanager
def _connection(missing: str = "") -> Iterator[sqlite3.Connection]:
    """A database connection for one command; refusals by the domain become a clear error.

    ``missing`` is the message when the thing named does not exist.
    """
    conn = db.connect(current_app.config["DATABASE"])
    try:
        yield conn
    except NotFound:
        raise click.ClickException(missing or "not found") from None
    except (ValidationError, Conflict) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()


def _read_password() -> str:
    """The password from standard input: asked twice on a terminal, one line when piped."""
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Repeat password: "):
            raise click.ClickException("the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


user_cli = AppGroup("user", help="Manage user accounts.")
token_cli = AppGroup("token", help="Manage API tokens.")
audit_cli = AppGroup("audit", help="Check the audit log.")
ae_cli = AppGroup("ae", help="Configure the modalities (DICOM AEs) that may talk to pacslite.")


@user_cli.command("add")
@click.argument("username")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(users.ROLES),
              help="A role of the user; repeat for several.")
@click.option("--name", "display_name", default="", help="Full name shown on pages and reports.")
def user_add(username: str, roles: tuple[str, ...], display_name: str) -> None:
    """Create a user; the password is read from standard input."""
    with _connection() as conn:
        user = users.create(conn, CLI_ACTOR, {"username": username, "display_name": display_name,
                                              "password": _read_password(), "roles": list(roles)})
    click.echo(f"created user {user.username} with roles {', '.join(sorted(user.roles))}")


@token_cli.command("create")
@click.argument("username")
def token_create(username: str) -> None:
    """Create an API token for USERNAME; the token is printed alone on the last line."""
    with _connection(missing=f"no user {username}") as conn:
        token = users.create_token(conn, CLI_ACTOR, username)
    click.echo(f"API token for {username} (shown only now; send it as 'Authorization: Bearer <token>'):")
    click.echo(token)


@audit_cli.command("verify")
@click.option("--anchors", type=click.Path(exists=True, dir_okay=False),
              help="Check against this anchor file (e.g. one kept beside a backup) instead of the instance's.")
def audit_verify(anchors: str | None) -> None:
    """Check the keyed hash chain of the audit log and its anchored heads; name the first row
    that was changed, or the newest rows that are missing."""
    with _connection() as conn:
        problem = audit.verify(conn, Path(anchors) if anchors else None)
        total = audit.row_count(conn)
    if problem is not None:
        click.echo(f"audit log BROKEN: {problem.describe()}", err=True)
        sys.exit(1)
    click.echo(f"audit log intact: {total} rows")


MAY_HELP = ("What it may use, comma-separated: " + ", ".join(aes.RIGHTS)
            + f" (default for a new AE: a modality's, {','.join(aes.MODALITY_RIGHTS)}).")
ANY_HOST_HELP = ("Accept it from any address (its address changes, DHCP): a warning on the modalities page."
                 " Without a host it is any host too.")
ALSO_FROM_HELP = "Further addresses or host names it may call from, separated by spaces."
TLS_HELP = "It must associate over TLS (the TLS port), and pacslite sends to it over TLS."
CERTIFICATE_HELP = "Its client certificate (a PEM file), pinned: over TLS it must present this one."
MODALITY_HELP = ("Its DICOM modality (CT, MR, DX…): a worklist query by its AE title also gets the exams of"
                 " this modality scheduled on no particular station.")


@ae_cli.command("add")
@click.argument("ae_title")
@click.option("--host", default="", help="Host name or IP address of the modality.")
@click.option("--port", default=104, type=int, show_default=True, help="Its DICOM port.")
@click.option("--name", default="", help="A name people recognise, e.g. 'CT room 1'.")
@click.option("--location", default="", help="Where it stands.")
@click.option("--modality", default="", help=MODALITY_HELP)
@click.option("--charset", default=aes.CHARSETS[0], type=click.Choice(aes.CHARSETS), show_default=True,
              help="Character set of its worklist and query answers.")
@click.option("--may", default=",".join(aes.MODALITY_RIGHTS), help=MAY_HELP)
@click.option("--any-host", is_flag=True, help=ANY_HOST_HELP)
@click.option("--also-from", default="", help=ALSO_FROM_HELP)
@click.option("--tls", is_flag=True, help=TLS_HELP)
@click.option("--certificate", type=click.File("r"), help=CERTIFICATE_HELP)
def ae_add(ae_title: str, host: str, port: int, name: str, location: str, modality: str, charset: str,
           may: str, any_host: bool, also_from: str, tls: bool, certificate: Any) -> None:
    """Allow the AE AE_TITLE (a modality or a workstation) to connect for what it may use."""
    with _connection() as conn:
        ae = aes.add_ae(conn, CLI_ACTOR, {"ae_title": ae_title, "host": host, "port": port, "name": name,
                                          "location": location, "modality": modality, "charset": charset,
                                          "rights": may, "any_host": any_host, "also_from": also_from, "tls": tls,
                                          "certificate": certificate.read() if certificate else ""})
    click.echo(f"added modality {_described(ae)}")


def _described(ae: Any) -> str:
    where = "any host" if aes.accepts_any_host(ae) else " ".join([ae["host"], *ae["also_from"].split()])
    return (f"{ae['ae_title']} ({ae['host'] or '-'}:{ae['port']}, accepted from {where}"
            f"{', TLS' if ae['tls'] else ''}{', certificate pinned' if ae['certificate'] else ''}, {ae['charset']},"
            f" may {ae['rights'] or 'nothing but echo'})")


@ae_cli.command("update")
@click.argument("ae_title")
@click.option("--host", help="Host name or IP address.")
@click.option("--port", type=int, help="Its DICOM port.")
@click.option("--name", help="A name people recognise.")
@click.option("--location", help="Where it stands.")
@click.option("--modality", help=MODALITY_HELP)
@click.option("--charset", type=click.Choice(aes.CHARSETS), help="Character set of its answers.")
@click.option("--may", help=MAY_HELP.replace("default for a new AE", "a new AE gets"))
@click.option("--any-host/--its-host", default=None, help=ANY_HOST_HELP)
@click.option("--also-from", help=ALSO_FROM_HELP)
@click.option("--tls/--no-tls", default=None, help=TLS_HELP)
@click.option("--certificate", type=click.File("r"), help=CERTIFICATE_HELP + " An empty file removes it.")
def ae_update(ae_title: str, **given: Any) -> None:
    """Change what is given for the AE AE_TITLE; the rest stays."""
    changes = {("rights" if k == "may" else k): v for k, v in given.items() if v is not None}
    if "certificate" in changes:
        changes["certificate"] = changes["certificate"].read()
    with _connection(missing=f"no modality {ae_title}") as conn:
        ae = aes.update_ae(conn, CLI_ACTOR, ae_title, changes)
    click.echo(f"updated {_described(ae)}")


@ae_cli.command("list")
def ae_list() -> None:
    """List the configured modalities."""
    with _connection() as conn:
        rows = aes.list_aes(conn)
    for ae in rows:
        where = "any-host" if aes.accepts_any_host(ae) else "its-host"
        click.echo(f"{ae['ae_title']:<16}  {ae['host'] or '-'}:{ae['port']}  {where}{'+tls' if ae['tls'] else ''}"
                   f"  {ae['modality'] or '-'}  {ae['charset']}  {ae['rights'] or '-'}  {ae['name']}")


@ae_cli.command("remove")
@click.argument("ae_title")
def ae_remove(ae_title: str) -> None:
    """Refuse the modality AE_TITLE from now on (its images stay)."""
    with _connection(missing=f"no modality {ae_title}") as conn:
        aes.remove_ae(conn, CLI_ACTOR, ae_title)
    click.echo(f"removed modality {ae_title}")


procedure_cli = AppGroup("procedure", help="The procedure catalogue the registration desk picks from.")


@procedure_cli.command("add")
@click.argument("code")
@click.option("--modality", required=True, help="The department's modality code (CT, DR, MR…).")
@click.option("--name-zh", default="", help="Its name in Chinese.")
@click.option("--name-en", default="", help="Its name in English.")
@click.option("--body-part", default="", help="The body part examined.")
@click.option("--station", "default_station_ae", default="", help="The default station (a configured AE of the modality).")
@click.option("--target", "target_hours", default="", help="Report target in hours (blank: the modality's).")
@click.option("--target-stat", "target_stat_hours", default="", help="Report target of a STAT exam, in hours.")
@click.option("--target-urgent", "target_urgent_hours", default="", help="Report target of an urgent exam, in hours.")
@click.option("--target-emergency", "target_emergency_hours", default="", help="Report target for emergency patients.")
@click.option("--preparation", default="", help="What the patient must do before (printed on the receipt).")
def procedure_add(code: str, **given: str) -> None:
    """Add the procedure CODE to the catalogue."""
    with _connection() as conn:
        added = procedures.add_procedure(conn, CLI_ACTOR, current_app.config, {"code": code, **given})
    click.echo(f"added procedure {added['code']} ({added['modality']}: {added['name_zh'] or added['name_en']})")


@procedure_cli.command("list")
@click.option("--modality", default="", help="Only this modality's.")
def procedure_list(modality: str) -> None:
    """List the catalogue (retired procedures marked)."""
    with _connection() as conn:
        rows = procedures.list_procedures(conn, modality)
    for p in rows:
        target = "-" if p["target_hours"] is None else f"{p['target_hours']:g} h"
        click.echo(f"{p['code']:<16}  {p['modality']:<4}  {target:<7}  {p['default_station_ae'] or '-':<16}"
                   f"  {p['name_zh']} / {p['name_en']}{'' if p['active'] else '  (retired)'}")


@procedure_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def procedure_import(path: Path) -> None:
    """Add or update the procedures of a UTF-8 CSV file whose header names the columns (code,
    modality, name_zh, name_en, body_part, default_station_ae, target_hours, …, preparation):
    all or none."""
    with path.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    unknown = set().union(*(row.keys() for row in rows)) - set(procedures.FIELDS) if rows else set()
    if unknown:
        raise click.ClickException(f"unknown columns: {', '.join(sorted(str(u) for u in unknown))}")
    with _connection() as conn:
        added, updated = procedures.import_catalogue(conn, CLI_ACTOR, current_app.config, rows)
    click.echo(f"imported {path.name}: {added} added, {updated} updated")


sweep_cli = AppGroup("sweep", help="The periodic checks (missing images, unfiled images, overdue reports).")


@sweep_cli.command("run")
def sweep_run() -> None:
    """Run the sweep once, as the server does every few minutes."""
    with _connection() as conn:
        outcome = sweep.run(conn, current_app.config)
    click.echo(f"sweep: {outcome.opened} alerts opened, {outcome.cleared} cleared, {outcome.open_total} open"
               f" ({outcome.seconds:.3f} s)")


@click.command("import")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--accession", default="", help="the exam the images belong to (needed for scanned images)")
@click.option("--map", "mapping", multiple=True, metavar="OUTSIDE=LOCAL",
              help="an outside patient ID (on a CD) and the local patient ID it is imported under")
def import_command(path: Path, accession: str, mapping: tuple[str, ...]) -> None:
    """Import scanned images, non-conformant DICOM, a folder, a ZIP or a CD (a folder with DICOMDIR)."""
    pairs = dict(item.split("=", 1) for item in mapping if "=" in item)
    with _connection() as conn:
        target = importing.target_for(conn, accession, pairs, current_app.config["UID_ROOT"])
        actor = audit.Actor("cli")
        report = importing.import_path(conn, actor, current_app.config, path, target)
    for line in report.lines:
        details = "; ".join(importing.english(n) for n in ([*line.fixes, line.reason] if line.reason else line.fixes))
        click.echo(f"{line.result:<12} {line.name}{'  (' + details + ')' if details else ''}")
    click.echo("imported: " + ", ".join(f"{count} {result}" for result, count in sorted(report.counts().items())))


forward_cli = AppGroup("forward", help="Forward rules: studies sent on to other AEs when they are filed.")


@forward_cli.command("add")
@click.option("--from-ae", "calling_ae", default="", help="Only studies from this calling AE (default: any).")
@click.option("--modality", default="", help="Only series of this DICOM modality, e.g. CT (default: any).")
@click.option("--to", "destination_ae", required=True, help="The destination: a configured AE with host and port.")
def forward_add(calling_ae: str, modality: str, destination_ae: str) -> None:
    """Send every study filed from an AE and/or of a modality on to another AE."""
    with _connection() as conn:
        rule_id = routing.add_rule(conn, CLI_ACTOR, {"calling_ae": calling_ae, "modality": modality,
                                                     "destination_ae": destination_ae})
    click.echo(f"rule {rule_id}: {calling_ae or 'any AE'} / {modality.upper() or 'any modality'} -> {destination_ae}")


@forward_cli.command("list")
def forward_list() -> None:
    """The forward rules."""
    with _connection() as conn:
        rules = routing.list_rules(conn)
    for rule in rules:
        click.echo(f"{rule['id']:>4}  {rule['calling_ae'] or 'any AE':<16}  {rule['modality'] or 'any':<6}"
                   f"  -> {rule['destination_ae']}")


@forward_cli.command("remove")
@click.argument("rule_id", type=int)
def forward_remove(rule_id: int) -> None:
    """Remove the forward rule RULE_ID (what is queued still goes)."""
    with _connection(missing=f"no rule {rule_id}") as conn:
        routing.remove_rule(conn, CLI_ACTOR, rule_id)
    click.echo(f"removed rule {rule_id}")


backup_cli = AppGroup("backup", help="Backups of the database, made while pacslite runs.")


@backup_cli.command("db")
@click.option("--to", "target", default="", help="a folder (default: BACKUP_DIR, <instance>/backups)")
def backup_db(target: str) -> None:
    """Copy the database consistently (SQLite's online backup API; pg_dump on PostgreSQL) without
    stopping pacslite."""
    try:
        path = integrity.backup_database(current_app.config, target or None)
    except integrity.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"database backed up to {path}")


database_cli = AppGroup("db", help="The database: copy it to PostgreSQL.")


@database_cli.command("copy")
@click.option("--to", "target", required=True, metavar="postgresql://…",
              help="an empty PostgreSQL database (create it first: docs/beyond-one-server.md)")
def db_copy(target: str) -> None:
    """Copy this SQLite installation into PostgreSQL: every row, then the counts and the audit
    chain are checked. Stop pacslite first; afterwards set PACSLITE_DATABASE_URL."""
    settings = current_app.config
    if db.is_postgresql(settings["DATABASE"]):
        raise click.ClickException("this installation already uses PostgreSQL; unset PACSLITE_DATABASE_URL to copy"
                                   " its SQLite database")
    source = Path(settings["DATABASE"])
    try:
        report = dbcopy.copy_to_postgresql(source, source.parent, target, Path(settings["STORAGE_DIR"]) / "database",
                                           progress=lambda table, rows: click.echo(f"  {table}: {rows} rows"))
    except (dbcopy.CopyError, *db.Error) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"copied {report.total} rows in {len(report.rows)} tables; every table's count matches")
    if report.audit_problem is not None:
        raise click.ClickException(f"the audit chain does not verify in the copy: {report.audit_problem.describe()}")
    click.echo("the audit chain verifies in the copy")


def init_app(app: Flask) -> None:
    for group in (database_cli, user_cli, token_cli, audit_cli, ae_cli, procedure_cli, sweep_cli, forward_cli, backup_cli, import_command):
        app.cli.add_command(group)
