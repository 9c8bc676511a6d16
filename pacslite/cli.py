"""Command line: ``flask --app app user add``, ``token create``, ``audit verify``."""
from __future__ import annotations

import getpass
import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from . import audit, db, users
from .validation import Conflict, NotFound, ValidationError

CLI_ACTOR = audit.Actor("cli")


def _connect():
    return db.connect(current_app.config["DATABASE"])


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


@user_cli.command("add")
@click.argument("username")
@click.option("--role", "roles", multiple=True, required=True, type=click.Choice(users.ROLES),
              help="A role of the user; repeat for several.")
@click.option("--name", "display_name", default="", help="Full name shown on pages and reports.")
def user_add(username: str, roles: tuple[str, ...], display_name: str) -> None:
    """Create a user; the password is read from standard input."""
    conn = _connect()
    try:
        user = users.create(conn, CLI_ACTOR, {"username": username, "display_name": display_name,
                                              "password": _read_password(), "roles": list(roles)})
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    click.echo(f"created user {user.username} with roles {', '.join(sorted(user.roles))}")


@token_cli.command("create")
@click.argument("username")
def token_create(username: str) -> None:
    """Create an API token for USERNAME; the token is printed alone on the last line."""
    conn = _connect()
    try:
        token = users.create_token(conn, CLI_ACTOR, username)
    except NotFound:
        raise click.ClickException(f"no user {username}") from None
    except Conflict as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        conn.close()
    click.echo(f"API token for {username} (shown only now; send it as 'Authorization: Bearer <token>'):")
    click.echo(token)


@audit_cli.command("verify")
def audit_verify() -> None:
    """Check the hash chain of the audit log; name the first row that no longer matches."""
    conn = _connect()
    try:
        bad = audit.verify(conn)
        total = audit.row_count(conn)
    finally:
        conn.close()
    if bad is not None:
        click.echo(f"audit log BROKEN: row {bad} does not match the chain", err=True)
        sys.exit(1)
    click.echo(f"audit log intact: {total} rows")


def init_app(app: Flask) -> None:
    for group in (user_cli, token_cli, audit_cli):
        app.cli.add_command(group)
