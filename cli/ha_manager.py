"""``ha-manager``: the administrator's command (BEHAVIOUR.md §8).

This version works on the cluster's store directly (``--cluster DIR`` or
``$PYHA_CLUSTER``); every edit is validated, atomic and digest-checked
(``store/admin.py``). Exit codes: 0 ok, 2 bad usage or value, 3 unknown
resource/node, 4 refused in the current state, 5 concurrent change,
6 cluster unreachable.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from actors.cluster import ClusterConfig
from ha.errors import HaError
from ha.status import perl_pretty_json, status_lines
from store import admin
from store.admin import AdminError
from store.dirstore import DirStore

ENV_CLUSTER = "PYHA_CLUSTER"


def die(msg: str, code: int) -> None:
    click.echo(f"ha-manager: {msg}", err=True)
    sys.exit(code)


class Ctx:
    def __init__(self, cluster_dir: str | None) -> None:
        path = cluster_dir or os.environ.get(ENV_CLUSTER)
        if not path:
            die(f"no cluster given (use --cluster DIR or set ${ENV_CLUSTER})", admin.EXIT_USAGE)
        try:
            self.cluster = ClusterConfig.load(str(path))
        except HaError as e:
            die(str(e), admin.EXIT_UNREACHABLE)
        self.nodes = sorted(self.cluster.nodes)

    @contextmanager
    def store(self) -> Iterator[DirStore]:
        try:
            store = DirStore(self.cluster.store_dir)
        except (HaError, OSError) as e:
            die(f"cannot open the cluster store: {e}", admin.EXIT_UNREACHABLE)
            raise AssertionError from None
        try:
            yield store
        except AdminError as e:
            die(str(e), e.code)
        except HaError as e:
            die(str(e), admin.EXIT_UNREACHABLE)
        finally:
            store.close()


pass_ctx = click.make_pass_decorator(Ctx)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--cluster", "cluster_dir", type=click.Path(file_okay=False), help=f"Cluster dir (or ${ENV_CLUSTER})."
)
@click.pass_context
def main(ctx: click.Context, cluster_dir: str | None) -> None:
    """Manage HA resources: status, add/set/remove, migrate/relocate, crm commands."""
    ctx.obj = Ctx(cluster_dir)


@main.command()
@click.option("--verbose", is_flag=True, help="Also print the full cluster state as JSON.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def status(c: Ctx, verbose: bool, output_format: str) -> None:
    """Show the cluster's HA status."""
    with c.store() as store:
        snap = admin.snapshot(store, c.nodes)
    now = time.time()
    # This client is no cluster member: it calls the cluster quorate while the master's
    # status is fresh (the API answers with the serving node's own view).
    ts = snap.ms.timestamp
    quorate = ts is not None and now - ts <= 30
    node = os.uname().nodename
    lines = status_lines(node=node, quorate=quorate, ms=snap.ms, lrm=snap.lrm, conf=snap.conf, now=now,
                         fmt_time=time.ctime)  # fmt: skip
    if output_format == "json":
        click.echo(json.dumps([ln.to_dict() for ln in lines], indent=2))
        return
    for ln in lines:
        click.echo(ln.text())
    if verbose:
        full = {
            "lrm_status": {n: (s.to_dict() if s else None) for n, s in snap.lrm.items()},
            "manager_status": snap.ms.to_dict(),
            "quorum": {"node": node, "quorate": "1" if quorate else "0"},
        }
        click.echo("full cluster state:")
        click.echo(perl_pretty_json(full))


@main.command()
@click.option("--type", "rtype", help="Only resources of this type.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@pass_ctx
def config(c: Ctx, rtype: str | None, output_format: str) -> None:
    """List the configured resources."""
    with c.store() as store:
        conf, digest = admin.read_config(store)
    items = [cd for sid, cd in sorted(conf.services.items()) if rtype is None or cd.type == rtype]
    if output_format == "json":
        out = []
        for cd in items:
            d: dict[str, object] = {
                "sid": cd.sid, "type": cd.type, "node": cd.node, "state": cd.state,
                "max_restart": cd.max_restart, "max_relocate": cd.max_relocate, "failback": int(cd.failback),
                **cd.extra,
            }  # fmt: skip
            if cd.group is not None:
                d["group"] = cd.group
            if cd.comment is not None:
                d["comment"] = cd.comment
            out.append(d)
        click.echo(json.dumps({"digest": digest, "resources": out}, indent=2))
        return
    for cd in items:
        click.echo(cd.sid)
        props = {
            "node": cd.node, "state": cd.state, "max_restart": str(cd.max_restart),
            "max_relocate": str(cd.max_relocate), "failback": str(int(cd.failback)), **cd.extra,
        }  # fmt: skip
        if cd.group is not None:
            props["group"] = cd.group
        if cd.comment is not None:
            props["comment"] = cd.comment
        for k in sorted(props):
            click.echo(f"\t{k} {props[k]}")
        click.echo("")


F = TypeVar("F", bound=Callable[..., Any])


def _resource_options(f: F) -> F:
    opts = [
        click.option("--state", type=click.Choice(["started", "stopped", "disabled", "ignored", "enabled"])),
        click.option("--group"),
        click.option("--failback", type=click.Choice(["0", "1"])),
        click.option("--max_restart", "--max-restart", "max_restart", type=click.IntRange(0)),
        click.option("--max_relocate", "--max-relocate", "max_relocate", type=click.IntRange(0)),
        click.option("--comment"),
        click.option("--cmd", help="proc: the command line of the service"),
        click.option("--check-tcp", "check_tcp", help="proc: HOST:PORT that must accept connections"),
        click.option("--check-cmd", "check_cmd", help="proc: health check command (exit 0 = healthy)"),
        click.option("--stop-timeout", "stop_timeout", help="proc: seconds between SIGTERM and SIGKILL"),
        click.option("--cwd", help="proc: working directory"),
        click.option("--env", help="proc: KEY=VALUE,... environment"),
        click.option("--agent", help="ocf: provider:type, e.g. heartbeat:Dummy"),
        click.option("--params", help="ocf: name=value ... parameters"),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _collect(kw: dict[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in kw.items() if v is not None}


@main.command()
@click.argument("sid")
@click.option("--node", required=True, help="Node the resource starts on.")
@_resource_options
@pass_ctx
def add(c: Ctx, /, sid: str, node: str, **kw: object) -> None:
    """Put resource SID under HA management."""
    with c.store() as store:
        cd = admin.add(store, sid, {"node": node, **_collect(kw)}, c.nodes)
    click.echo(f"added {cd.sid} on {cd.node} (state {cd.state})")


@main.command("set")
@click.argument("sid")
@_resource_options
@click.option("--delete", "delete", help="Comma-separated options to remove.")
@click.option("--digest", help="Refuse if the configuration changed since this digest was read.")
@pass_ctx
def set_(c: Ctx, /, sid: str, delete: str | None, digest: str | None, **kw: object) -> None:
    """Change options of resource SID."""
    dels = [d.strip() for d in delete.split(",") if d.strip()] if delete else []
    with c.store() as store:
        admin.set_options(store, sid, _collect(kw), dels, digest)


@main.command()
@click.argument("sid")
@pass_ctx
def remove(c: Ctx, sid: str) -> None:
    """Remove resource SID from HA management."""
    with c.store() as store:
        admin.remove(store, sid)


def _queue(c: Ctx, line: str) -> None:
    with c.store() as store:
        admin.crm_command(store, line, c.nodes)


@main.command()
@click.argument("sid")
@click.argument("node")
@pass_ctx
def migrate(c: Ctx, sid: str, node: str) -> None:
    """Migrate SID to NODE (online where the type supports it)."""
    _queue(c, f"migrate {admin.normalize_sid(sid)} {node}")


@main.command()
@click.argument("sid")
@click.argument("node")
@pass_ctx
def relocate(c: Ctx, sid: str, node: str) -> None:
    """Relocate SID to NODE (stop, move, start)."""
    _queue(c, f"relocate {admin.normalize_sid(sid)} {node}")


@main.group("crm-command")
def crm_command() -> None:
    """Queue a command for the CRM master."""


@crm_command.command("migrate")
@click.argument("sid")
@click.argument("node")
@pass_ctx
def crm_migrate(c: Ctx, sid: str, node: str) -> None:
    _queue(c, f"migrate {admin.normalize_sid(sid)} {node}")


@crm_command.command("relocate")
@click.argument("sid")
@click.argument("node")
@pass_ctx
def crm_relocate(c: Ctx, sid: str, node: str) -> None:
    _queue(c, f"relocate {admin.normalize_sid(sid)} {node}")


@crm_command.command("stop")
@click.argument("sid")
@click.argument("timeout", type=click.IntRange(0))
@pass_ctx
def crm_stop(c: Ctx, sid: str, timeout: int) -> None:
    """Stop SID with TIMEOUT seconds (0 = hard stop)."""
    _queue(c, f"stop {admin.normalize_sid(sid)} {timeout}")


@crm_command.command("node-maintenance")
@click.argument("action", type=click.Choice(["enable", "disable"]))
@click.argument("node")
@pass_ctx
def crm_maintenance(c: Ctx, action: str, node: str) -> None:
    _queue(c, f"{action}-node-maintenance {node}")


@crm_command.command("disarm-ha")
@click.argument("mode", type=click.Choice(["freeze", "ignore"]))
@pass_ctx
def crm_disarm(c: Ctx, mode: str) -> None:
    _queue(c, f"disarm-ha {mode}")


@crm_command.command("arm-ha")
@pass_ctx
def crm_arm(c: Ctx) -> None:
    _queue(c, "arm-ha")


if __name__ == "__main__":
    main()
