"""``ha-manager``: the administrator's command (BEHAVIOUR.md §8, docs/CLI.md).

A client of the node API (docs/API.md): it connects to a node of the cluster
given by ``--cluster DIR`` (or ``$PYHA_CLUSTER``), tries the other nodes when
one does not answer, and gives up after a timeout. When no node of the
cluster runs at all, commands work on the stopped cluster's store directly
(``--offline`` forces that), with the same validation.

Exit codes: 0 ok, 1 internal error, 2 bad usage or value, 3 unknown
resource/node/group/rule, 4 refused in the current state, 5 concurrent
change (digest), 6 cluster unreachable or without quorum, 7 permission
denied (read-only key). Errors are one line on stderr, never a traceback.
"""

# size: the ha-manager command tree: one short click command per reference command (docs/CLI.md) with its
#   output; the shell and the watch view are modules of their own already

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol, TypeVar

import click
from click.shell_completion import CompletionItem

from admin.cluster import CLUSTER_FILE, ClusterConfig
from admin.errors import ExitCode
from admin.private import private_umask
from cli.api_client import (
    ROLES,
    ApiClient,
    ApiError,
    generate_client_key,
    load_client_key,
    revoke_client_key,
)
from cli.refsyntax import RefGroup, bool_option_kwargs
from fence.procfs import read_pid_file
from ha.config.schema import (
    DATACENTER_KEYS,
    DATACENTER_LINES,
    GROUPS,
    RESOURCES,
    RULES,
    ConfigSchema,
    Kind,
    Prop,
)
from ha.errors import ConfigError, HaError

ENV_CLUSTER = "PYHA_CLUSTER"
ENV_OFFLINE = "PYHA_OFFLINE"
OUTPUT_FORMATS = ("text", "json", "json-pretty", "yaml")
RULE_TYPES = tuple(t.name for t in RULES.section_types)
RESOURCE_TYPES = tuple(t.name for t in RESOURCES.section_types)


def die(msg: str, code: int, details: Sequence[str] = ()) -> NoReturn:
    click.echo(f"ha-manager: {msg}", err=True)
    for d in details:
        click.echo(f"  {d}", err=True)
    sys.exit(code)


# -- backends ---------------------------------------------------------------------------------


class Backend(Protocol):
    node: str | None

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any: ...

    def close(self) -> None: ...


class LocalBackend:
    """The stopped cluster's store, through the same operations the nodes serve."""

    def __init__(self, cluster: ClusterConfig) -> None:
        from admin.ops import ApiOps  # noqa: PLC0415 - only for the offline path

        self.store = cluster.open_store()
        self.node: str | None = None
        self.ops = ApiOps(
            os.uname().nodename, sorted(cluster.nodes), self.store, lambda: False,
            cluster=cluster.cluster, endpoints=cluster.nodes, require_quorum=False,
            # a fresh etcd client cannot tell a lease's age (admin/liveness.py)
            lease_ttl=cluster.timing.lease_ttl if cluster.store_kind == "dir" else None,
        )  # fmt: skip

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        from admin.errors import AdminError  # noqa: PLC0415

        try:
            return self.ops.call(op, dict(args or {}))
        except AdminError as e:
            raise ApiError(str(e), e.code, e.reason, e.details) from None
        except HaError as e:
            raise ApiError(str(e), ExitCode.UNREACHABLE) from None

    def close(self) -> None:
        self.store.close()


def cluster_running(cluster: ClusterConfig) -> bool:
    """Does any node process of this (local) cluster run? (``run/<node>/ha-node.pid``)"""
    return any(read_pid_file(cluster.run_dir(n) / "ha-node.pid") is not None for n in cluster.nodes)


class Ctx:
    """What every command needs: the cluster and a backend, both made on first use."""

    def __init__(
        self,
        cluster_dir: str | None,
        node: str | None = None,
        timeout: float = 5.0,
        key: str | None = None,
        role: str | None = None,
        offline: bool = False,
    ) -> None:
        self.cluster_dir = cluster_dir or os.environ.get(ENV_CLUSTER)
        self.prefer = node
        self.timeout = timeout
        self.key = key
        self.role = role
        self.offline = offline or os.environ.get(ENV_OFFLINE, "") not in ("", "0")
        self._cluster: ClusterConfig | None = None
        self._backend: Backend | None = None
        self.interactive = False  # set by the shell: errors must not end the session

    @property
    def cluster(self) -> ClusterConfig:
        if self._cluster is None:
            if not self.cluster_dir:
                die(f"no cluster given (use --cluster DIR or set ${ENV_CLUSTER})", ExitCode.USAGE)
            if not (Path(self.cluster_dir) / CLUSTER_FILE).is_file():
                # not "unreachable" (6, worth a retry): there is no cluster to reach
                die(f"no cluster in '{self.cluster_dir}' (run 'ha-cluster init' first)", ExitCode.NOT_FOUND)
            try:
                self._cluster = ClusterConfig.load(str(self.cluster_dir))
            except HaError as e:
                die(str(e), ExitCode.USAGE)  # a malformed cluster.json: a bad value, not a retry
        return self._cluster

    @property
    def nodes(self) -> list[str]:
        return sorted(self.cluster.nodes)

    def backend(self) -> Backend:
        if self._backend is None:
            c = self.cluster
            try:
                if self.offline or not cluster_running(c):
                    self._backend = LocalBackend(c)
                else:
                    key = load_client_key(c, self.key, self.role) if c.curve else None
                    self._backend = ApiClient(c, key=key, prefer=self.prefer, timeout=self.timeout)
            except ApiError as e:
                die(e.message, e.code, e.details)
            except (HaError, OSError) as e:
                die(f"cannot open the cluster: {e}", ExitCode.UNREACHABLE)
        return self._backend

    def call(self, op: str, args: Mapping[str, Any] | None = None) -> Any:
        try:
            return self.backend().call(op, args)
        except ApiError as e:
            die(e.message, e.code, e.details)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


pass_ctx = click.make_pass_decorator(Ctx)


# -- completion -------------------------------------------------------------------------------


def _completion_ctx(ctx: click.Context) -> Ctx | None:
    root = ctx.find_root()
    if isinstance(root.obj, Ctx):
        return root.obj
    p = root.params
    return Ctx(p.get("cluster_dir"), p.get("node"), timeout=1.0, key=p.get("key"), role=p.get("role"))


def _complete(
    fetch: Callable[[Ctx], list[str]],
) -> Callable[[click.Context, click.Parameter, str], list[Any]]:
    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        c = _completion_ctx(ctx)
        if c is None:
            return []
        try:
            values = fetch(c)
        except (SystemExit, Exception):  # completion never fails loudly
            return []
        return [CompletionItem(v) for v in values if v.startswith(incomplete)]

    return complete


def _sids(c: Ctx) -> list[str]:
    return [r["sid"] for r in c.call("config").get("resources", [])]


def _groups(c: Ctx) -> list[str]:
    return [g["group"] for g in c.call("groups").get("groups", [])]


def _rules(c: Ctx) -> list[str]:
    return [r["rule"] for r in c.call("rules").get("rules", [])]


complete_sid = _complete(_sids)
complete_node = _complete(lambda c: c.nodes)
complete_group = _complete(_groups)
complete_rule = _complete(_rules)


# -- output -------------------------------------------------------------------------------------

F = TypeVar("F", bound=Callable[..., Any])


def output_options(f: F) -> F:
    f = click.option("--noheader", is_flag=True, help="Tables: no header line.")(f)
    f = click.option("--noborder", is_flag=True, help="Tables: no borders.")(f)
    return click.option(
        "--output-format", type=click.Choice(OUTPUT_FORMATS), default="text", show_default=True
    )(f)


def emit_json(data: Any, fmt: str) -> None:
    """A read command's result as JSON, pretty JSON or YAML (the reference's ``--output-format``)."""
    if fmt == "yaml":
        import yaml  # noqa: PLC0415 - PyYAML, only for this format

        text = yaml.safe_dump(data, sort_keys=True, default_flow_style=False, allow_unicode=True)
        click.echo(text, nl=False)
        return
    if fmt == "json-pretty":
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        click.echo(json.dumps(data, sort_keys=True, separators=(",", ":")))


def table(rows: list[dict[str, Any]], cols: list[str], noborder: bool = False, noheader: bool = False) -> str:
    """A text table like the reference's ``--output-format text`` (box borders unless --noborder)."""
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(cols)]
    lines: list[str] = []
    if noborder:
        if not noheader:
            lines.append(" ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)).rstrip())
        lines += [" ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
        return "\n".join(lines)

    def rule(left: str, mid: str, right: str, fill: str) -> str:
        return left + mid.join(fill * (w + 2) for w in widths) + right

    lines.append(rule("┌", "┬", "┐", "─"))
    if not noheader:
        lines.append("│" + "│".join(f" {c.ljust(w)} " for c, w in zip(cols, widths, strict=True)) + "│")
        lines.append(rule("╞", "╪", "╡", "═"))
    for i, row in enumerate(cells):
        lines.append("│" + "│".join(f" {v.ljust(w)} " for v, w in zip(row, widths, strict=True)) + "│")
        if i < len(cells) - 1:
            lines.append(rule("├", "┼", "┤", "─"))
    lines.append(rule("└", "┴", "┘", "─"))
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------------


@click.group(cls=RefGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option(
    "--cluster", "cluster_dir", type=click.Path(file_okay=False), help=f"Cluster dir (or ${ENV_CLUSTER})."
)
@click.option("--node", shell_complete=complete_node, help="Ask this node first (or $PYHA_NODE).")
@click.option("--timeout", type=click.FloatRange(0.1, 600), default=5.0, show_default=True,
              help="Seconds to wait for a node's answer.")  # fmt: skip
@click.option(
    "--key", type=click.Path(dir_okay=False), help="Client key (.key_secret) to use (or $PYHA_KEY)."
)
@click.option("--role", type=click.Choice(ROLES), help="Use the first client key of this role.")
@click.option(
    "--offline", is_flag=True, help=f"Work on the store of a stopped cluster (or ${ENV_OFFLINE}=1)."
)
@click.version_option("1", "--version", message="ha-manager (pyha) API version %(version)s")
@click.pass_context
def main(
    ctx: click.Context,
    cluster_dir: str | None,
    node: str | None,
    timeout: float,
    key: str | None,
    role: str | None,
    offline: bool,
) -> None:
    """Manage HA resources: status, configuration, service and crm commands."""
    private_umask()  # --offline edits and new keys are root's alone (issue #11)
    if ctx.obj is None:  # the shell passes its own, long-lived Ctx
        ctx.obj = Ctx(cluster_dir, node, timeout, key, role, offline)
        ctx.call_on_close(ctx.obj.close)


# -- status and config ---------------------------------------------------------------------------


@main.command()
@click.option("--verbose", is_flag=True, help="Also print the full cluster state as JSON.")
@click.option("--watch", is_flag=True, help="Live view of nodes, services and events (Ctrl-C ends).")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="--watch: refresh interval in seconds.")  # fmt: skip
@click.option("--duration", type=click.FloatRange(0, None), help="--watch: stop after this many seconds.")
@output_options
@pass_ctx
def status(
    c: Ctx,
    verbose: bool,
    watch: bool,
    interval: float,
    duration: float | None,
    output_format: str,
    noborder: bool,
    noheader: bool,
) -> None:
    """Show the cluster's HA status."""
    if watch:
        try:
            from cli.watch import run_watch  # noqa: PLC0415 - rich is only needed here
        except ImportError as e:
            die(f"status --watch needs the 'rich' package ({e})", 1)

        backend = c.backend()
        if not isinstance(backend, ApiClient):
            die("--watch needs a running cluster", ExitCode.UNREACHABLE)
        sys.exit(run_watch(backend, interval=interval, duration=duration))
    res = c.call("status", {"verbose": True} if verbose else {})
    stopped = isinstance(c.backend(), LocalBackend) and not cluster_running(c.cluster)
    if output_format != "text":
        emit_json({**res, "running": False} if stopped else res, output_format)
        return
    for ln in res["lines"]:
        click.echo(_stopped_line(ln) if stopped else ln["text"])
    if verbose:
        click.echo("full cluster state:")
        click.echo(res["full_text"])


def _stopped_line(ln: Mapping[str, Any]) -> str:
    """A status line of a stopped cluster: nothing runs, what was recorded last is stale (issue #13)."""
    kind, status = ln["type"], str(ln["status"])
    if kind == "quorum":
        return "quorum none: no node of this cluster runs (ha-cluster up starts them)"
    if kind == "fencing":
        return "fencing none (no node runs)"
    if kind in ("master", "lrm", "service"):
        name, _, rest = status.partition(" (")
        inner, _, tail = rest.partition(")")  # the master line goes on after it (" - static load CRS")
        return f"{kind} {name} (not running; stale, last known: {inner}){tail}" if rest else ln["text"]
    return str(ln["text"])


_HIDDEN_KEYS = {"digest", "sid", "type", "errors", "name"}


@main.command()
@click.option("--type", "rtype", type=click.Choice(RESOURCE_TYPES), help="Only resources of this type.")
@output_options
@pass_ctx
def config(c: Ctx, rtype: str | None, output_format: str, noborder: bool, noheader: bool) -> None:
    """List the configured resources."""
    res = c.call("config", {"type": rtype} if rtype else {})
    for e in res.get("property_errors", []):
        click.echo(f"error: property '{e['property']}' - {e['message']} ({e['sid']})", err=True)
    for e in res.get("errors", []):
        click.echo(f"error: {e}", err=True)
    if output_format != "text":
        emit_json(res, output_format)
        return
    for r in res["resources"]:
        click.echo(r["sid"])
        for k in sorted(r):
            if k not in _HIDDEN_KEYS and not _is_default(str(r.get("type", "")), k, r[k]):
                click.echo(f"\t{k} {r[k]}")
        click.echo("")


def _is_default(rtype: str, key: str, value: object) -> bool:
    """As the reference's ``config``: only the keys set (JSON output keeps every value).

    ``node`` is left out too: the reference derives it (where the guest is) and
    ``status`` shows it.
    """
    if key == "node":
        return True
    prop = RESOURCES.prop(key, rtype)
    if prop is None or prop.required or prop.default is None:
        return False
    try:
        return bool(prop.parse(value) == prop.default)
    except ConfigError:
        return False


# -- resources --------------------------------------------------------------------------------------


def schema_options(schema: ConfigSchema, *, adding: bool) -> Callable[[F], F]:
    """The click options of an add (``adding``) or set command, one per property of ``schema``.

    Flags, choices, ranges, help and completion come from the property
    (ha/config/schema.py); the values are checked again, fully, by the API.
    """

    def decorate(f: F) -> F:
        for p in reversed(schema.api_props()):
            if adding or p.settable:
                f = click.option(*p.flags, p.name, **_click_kwargs(p, adding))(f)
        return f

    return decorate


_COMPLETION = {Kind.NODE: complete_node, Kind.NODE_LIST: complete_node, Kind.GROUP: complete_group,
               Kind.SID_LIST: complete_sid}  # fmt: skip


def _click_kwargs(p: Prop, adding: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {"help": f"{', '.join(p.types)}: {p.help}" if p.types else p.help}
    if p.kind == Kind.ENUM:
        kw["type"] = click.Choice([*p.choices, *p.aliases])
    elif p.kind == Kind.BOOL:
        kw.update(bool_option_kwargs())  # bare -restricted means 1, as in the reference
    elif p.kind == Kind.UINT:
        kw["type"] = click.IntRange(p.min, p.max)
    if p.kind in _COMPLETION:
        kw["shell_complete"] = _COMPLETION[p.kind]
    if adding and p.required and not p.types:  # type-dependent requirements are the API's refusal
        kw["required"] = True
    return kw


def _delete_help(schema: ConfigSchema) -> str:
    names = ", ".join(p.name for p in schema.api_props() if p.deletable)
    return f"Comma-separated options to reset/remove ({names})."


def _collect(kw: Mapping[str, object]) -> dict[str, str]:
    return {k: str(v) for k, v in kw.items() if v is not None}


def _split(value: str | None) -> list[str]:
    return [d.strip() for d in value.split(",") if d.strip()] if value else []


@main.command()
@click.argument("sid")
@click.option(
    "--type", "rtype", type=click.Choice(RESOURCE_TYPES), help="Resource type for a bare id (default vm)."
)
@schema_options(RESOURCES, adding=True)
@pass_ctx
def add(c: Ctx, /, sid: str, rtype: str | None, **kw: object) -> None:
    """Put resource SID (TYPE:NAME, or a bare VMID) under HA management."""
    if rtype is not None and ":" not in sid:
        sid = f"{rtype}:{sid}"
    c.call("add", {"sid": sid, "options": _collect(kw)})


@main.command("set")
@click.argument("sid", shell_complete=complete_sid)
@schema_options(RESOURCES, adding=False)
@click.option("--delete", "delete", help=_delete_help(RESOURCES))
@click.option("--digest", help="Refuse if the configuration changed since this digest was read.")
@pass_ctx
def set_(c: Ctx, /, sid: str, delete: str | None, digest: str | None, **kw: object) -> None:
    """Change options of resource SID."""
    args: dict[str, Any] = {"sid": sid, "options": _collect(kw), "delete": _split(delete)}
    if digest:
        args["digest"] = digest
    c.call("set", args)


@main.command()
@click.argument("sid", shell_complete=complete_sid)
@click.option("--purge", **bool_option_kwargs(), default="1", show_default=True,
              help="Also remove SID from rules (and delete rules left empty).")  # fmt: skip
@pass_ctx
def remove(c: Ctx, sid: str, purge: str) -> None:
    """Remove resource SID from HA management (the service itself is not touched)."""
    c.call("remove", {"sid": sid, "purge": purge == "1"})


# -- service and crm commands ------------------------------------------------------------------------


def _move(c: Ctx, task: str, sid: str, node: str) -> None:
    res = c.call(task, {"sid": sid, "node": node})
    sid = res["command"].split()[1]
    if res.get("blocking"):
        click.echo(f"cannot {task} resource '{sid}' to node '{node}':", err=True)
        for csid in res["blocking"]:
            click.echo(
                f"- resource '{csid}' on target node '{node}' in negative affinity with resource '{sid}'",
                err=True,
            )
        sys.exit(4)
    for csid in res.get("comigrated", []):
        what = f"in positive affinity with resource '{sid}'"
        click.echo(f"also {task} resource '{csid}' {what} to target node '{node}'")


@main.command()
@click.argument("sid", shell_complete=complete_sid)
@click.argument("node", shell_complete=complete_node)
@pass_ctx
def migrate(c: Ctx, sid: str, node: str) -> None:
    """Migrate SID to NODE (online where the type supports it)."""
    _move(c, "migrate", sid, node)


@main.command()
@click.argument("sid", shell_complete=complete_sid)
@click.argument("node", shell_complete=complete_node)
@pass_ctx
def relocate(c: Ctx, sid: str, node: str) -> None:
    """Relocate SID to NODE (stop, move, start)."""
    _move(c, "relocate", sid, node)


@main.group("crm-command")
def crm_command() -> None:
    """Queue a command for the CRM master."""


@crm_command.command("migrate")
@click.argument("sid", shell_complete=complete_sid)
@click.argument("node", shell_complete=complete_node)
@pass_ctx
def crm_migrate(c: Ctx, sid: str, node: str) -> None:
    """Migrate SID to NODE."""
    _move(c, "migrate", sid, node)


@crm_command.command("relocate")
@click.argument("sid", shell_complete=complete_sid)
@click.argument("node", shell_complete=complete_node)
@pass_ctx
def crm_relocate(c: Ctx, sid: str, node: str) -> None:
    """Relocate SID to NODE."""
    _move(c, "relocate", sid, node)


def _timeout_arg(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        timeout = int(value)
    except ValueError:
        raise click.BadParameter(f"timeout must be a whole number of seconds, got '{value}'") from None
    if timeout < 0:
        raise click.BadParameter(f"timeout must be 0 or more seconds (0 = hard stop), got {timeout}")
    return timeout


# a negative number is the TIMEOUT argument (and refused as such), not an unknown option
@crm_command.command("stop", context_settings={"ignore_unknown_options": True})
@click.argument("sid", shell_complete=complete_sid)
@click.argument("timeout", callback=_timeout_arg)
@pass_ctx
def crm_stop(c: Ctx, sid: str, timeout: int) -> None:
    """Stop SID with TIMEOUT seconds (0 = hard stop)."""
    c.call("crm_command", {"cmd": "stop", "sid": sid, "timeout": timeout})


@crm_command.command("node-maintenance")
@click.argument("action", type=click.Choice(["enable", "disable"]))
@click.argument("node", shell_complete=complete_node)
@pass_ctx
def crm_maintenance(c: Ctx, action: str, node: str) -> None:
    """Put NODE into maintenance mode, or take it out."""
    c.call("crm_command", {"cmd": f"{action}-node-maintenance", "node": node})


@crm_command.command("disarm-ha")
@click.argument("mode", type=click.Choice(["freeze", "ignore"]))
@pass_ctx
def crm_disarm(c: Ctx, mode: str) -> None:
    """Release all watchdogs: services frozen (freeze) or unmanaged (ignore)."""
    c.call("crm_command", {"cmd": "disarm-ha", "mode": mode})


@crm_command.command("arm-ha")
@pass_ctx
def crm_arm(c: Ctx) -> None:
    """Re-arm the HA stack after disarm-ha."""
    c.call("crm_command", {"cmd": "arm-ha"})


# -- groups ------------------------------------------------------------------------------------


@main.command()
@output_options
@pass_ctx
def groupconfig(c: Ctx, output_format: str, noborder: bool, noheader: bool) -> None:
    """List the HA groups."""
    res = c.call("groups")
    if output_format != "text":
        emit_json(res, output_format)
        return
    for g in res["groups"]:
        click.echo(f"group: {g['group']}")
        for k in sorted(g):
            if k in ("group", "type") or (k in ("restricted", "nofailback") and not g[k]):
                continue
            click.echo(f"\t{k} {g[k]}")
        click.echo("")


@main.command()
@click.argument("group")
@schema_options(GROUPS, adding=True)
@pass_ctx
def groupadd(c: Ctx, /, group: str, **kw: object) -> None:
    """Create HA group GROUP (the master applies it as node-affinity rule ha-group-GROUP)."""
    c.call("group_add", {"group": group, "options": _collect(kw)})


@main.command()
@click.argument("group", shell_complete=complete_group)
@schema_options(GROUPS, adding=False)
@click.option("--delete", help=_delete_help(GROUPS))
@click.option("--digest", help="Refuse if groups.cfg changed since this digest was read.")
@pass_ctx
def groupset(c: Ctx, /, group: str, delete: str | None, digest: str | None, **kw: object) -> None:
    """Change HA group GROUP."""
    args: dict[str, Any] = {"group": group, "options": _collect(kw), "delete": _split(delete)}
    if digest:
        args["digest"] = digest
    c.call("group_set", args)


@main.command()
@click.argument("group", shell_complete=complete_group)
@pass_ctx
def groupremove(c: Ctx, group: str) -> None:
    """Delete HA group GROUP (refused while a resource uses it)."""
    c.call("group_remove", {"group": group})


# -- rules ------------------------------------------------------------------------------------------------


@main.group()
def rules() -> None:
    """HA rules: node-affinity and resource-affinity."""


def _rules_listing(c: Ctx, rtype: str | None, resource: str | None) -> list[dict[str, Any]]:
    args = {k: v for k, v in (("type", rtype), ("resource", resource)) if v}
    return list(c.call("rules", args)["rules"])


def _rules_filter_options(f: F) -> F:
    f = click.option("--resource", shell_complete=complete_sid, help="Only rules with this resource.")(f)
    return click.option("--type", "rtype", type=click.Choice(RULE_TYPES), help="Only rules of this type.")(f)


@rules.command("list")
@_rules_filter_options
@output_options
@pass_ctx
def rules_list(
    c: Ctx, rtype: str | None, resource: str | None, output_format: str, noborder: bool, noheader: bool
) -> None:
    """List the rules."""
    rows = _rules_listing(c, rtype, resource)
    if output_format != "text":
        emit_json(rows, output_format)
        return
    for r in rows:
        r["details"] = (
            f"nodes {r['nodes']}" + (", strict" if r.get("strict") else "")
            if r["type"] == "node-affinity"
            else f"affinity {r.get('affinity')}"
        )
    click.echo(table(rows, ["rule", "type", "resources", "details", "state"], noborder, noheader))


@rules.command("config")
@_rules_filter_options
@output_options
@pass_ctx
def rules_config(
    c: Ctx, rtype: str | None, resource: str | None, output_format: str, noborder: bool, noheader: bool
) -> None:
    """Show the rules with their state (in use, ignored (conflicts), disabled)."""
    rows = _rules_listing(c, rtype, resource)
    if output_format != "text":
        emit_json(rows, output_format)
        return
    click.echo(table(rows, ["enabled", "state", "rule", "type", "resources", "comment"], noborder, noheader))


@rules.command("add")
@click.argument("rtype", metavar="TYPE", type=click.Choice(RULE_TYPES))
@click.argument("rule")
@schema_options(RULES, adding=True)
@pass_ctx
def rules_add(c: Ctx, /, rtype: str, rule: str, **kw: object) -> None:
    """Create rule RULE of TYPE."""
    c.call("rule_add", {"type": rtype, "rule": rule, "options": _collect(kw)})


@rules.command("set")
@click.argument("rtype", metavar="TYPE", type=click.Choice(RULE_TYPES))
@click.argument("rule", shell_complete=complete_rule)
@schema_options(RULES, adding=False)
@click.option("--delete", help=_delete_help(RULES))
@click.option("--digest", help="Refuse if rules.cfg changed since this digest was read.")
@pass_ctx
def rules_set(c: Ctx, /, rtype: str, rule: str, delete: str | None, digest: str | None, **kw: object) -> None:
    """Change rule RULE of TYPE."""
    args: dict[str, Any] = {"type": rtype, "rule": rule, "options": _collect(kw), "delete": _split(delete)}
    if digest:
        args["digest"] = digest
    c.call("rule_set", args)


@rules.command("remove")
@click.argument("rule", shell_complete=complete_rule)
@pass_ctx
def rules_remove(c: Ctx, rule: str) -> None:
    """Delete rule RULE."""
    c.call("rule_remove", {"rule": rule})


# -- datacenter.cfg ---------------------------------------------------------------------------------------

DC_KEYS = (*DATACENTER_LINES, *DATACENTER_KEYS)
_MAX_WORKERS = DATACENTER_KEYS["max_workers"]


def _complete_dc_key(assign: bool) -> Callable[[click.Context, click.Parameter, str], list[Any]]:
    """datacenter.cfg keys (static: no cluster needed); ``set`` offers ``KEY=``."""

    def complete(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        return [CompletionItem(k + "=" if assign else k) for k in DC_KEYS if k.startswith(incomplete)]

    return complete


@main.group()
def datacenter() -> None:
    """datacenter.cfg's HA options: crs (the scheduler) and ha (the shutdown policy)."""


@datacenter.command("get")
@click.argument("key", required=False, shell_complete=_complete_dc_key(False))
@output_options
@pass_ctx
def datacenter_get(c: Ctx, key: str | None, output_format: str, noborder: bool, noheader: bool) -> None:
    """Show every option (defaults marked), or the value of KEY (crs.ha, crs, ha.shutdown_policy, ...)."""
    if key is not None and key not in DC_KEYS:
        die(f"unknown datacenter option '{key}' (one of {', '.join(DC_KEYS)})", ExitCode.USAGE)
    res = c.call("datacenter")
    for e in res.get("errors", []):
        click.echo(f"error: {e}", err=True)
    if key is not None:
        value = res["lines"][key] if key in DATACENTER_LINES else res["options"][key]
        if output_format != "text":
            default = key not in res["set"] and key not in DATACENTER_LINES
            emit_json(
                {"digest": res["digest"], "key": key, "value": value, "default": default}, output_format
            )
        elif value is not None:
            click.echo(value)
        return
    if output_format != "text":
        emit_json(res, output_format)
        return
    for k, v in res["options"].items():
        if k in res["set"]:
            click.echo(f"{k} {v}")
        else:
            click.echo(f"{k} {'-' if v is None else v} (default)")


def _assignments(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for a in values:
        k, eq, v = a.partition("=")
        if not eq or not k:
            die(f"expected KEY=VALUE, got '{a}'", ExitCode.USAGE)
        if k in out:
            die(f"'{k}' given twice", ExitCode.USAGE)
        out[k] = v
    return out


@datacenter.command("set")
@click.argument("assignments", metavar="[KEY=VALUE]...", nargs=-1, shell_complete=_complete_dc_key(True))
@click.option(
    "--crs",
    metavar="LINE",
    help=f"The whole crs line, replaced: ha={'|'.join(DATACENTER_KEYS['crs.ha'].choices)}"
    "[,ha-rebalance-on-start=0|1,...].",
)
@click.option(
    "--ha",
    "ha_line",
    metavar="LINE",
    help="The whole ha line, replaced: shutdown_policy="
    f"{'|'.join(DATACENTER_KEYS['ha.shutdown_policy'].choices)}.",
)
@click.option(
    *_MAX_WORKERS.flags,
    "max_workers",
    type=click.IntRange(_MAX_WORKERS.min, _MAX_WORKERS.max),
    help=_MAX_WORKERS.help,
)
@click.option(
    "--delete", metavar="KEYS", help=f"Comma-separated options or lines to remove ({', '.join(DC_KEYS)})."
)
@click.option("--digest", help="Refuse if datacenter.cfg changed since this digest was read.")
@pass_ctx
def datacenter_set(
    c: Ctx, assignments: tuple[str, ...], crs: str | None, ha_line: str | None, max_workers: int | None,
    delete: str | None, digest: str | None,
) -> None:  # fmt: skip
    """Change datacenter.cfg options: KEY=VALUE (crs.ha=static, ha.shutdown_policy=migrate), or whole lines.

    Every key and value is checked first (an unknown scheduler mode is refused);
    lines and properties not named, comments and other keys are kept.
    """
    options = _assignments(assignments)
    for k, v in (("crs", crs), ("ha", ha_line), ("max_workers", max_workers)):
        if v is not None:
            if k in options:
                die(f"'{k}' given twice", ExitCode.USAGE)
            options[k] = str(v)
    args: dict[str, Any] = {"options": options, "delete": _split(delete)}
    if digest:
        args["digest"] = digest
    c.call("datacenter_set", args)


# -- tools --------------------------------------------------------------------------------------------------


@main.command("help")
@click.argument("command", nargs=-1)
@click.option("--verbose", is_flag=True, help="The full help of every command (of COMMAND's subcommands).")
@click.pass_context
def help_(ctx: click.Context, command: tuple[str, ...], verbose: bool) -> None:
    """Help on COMMAND (e.g. 'help rules add'), or on every command with --verbose."""
    cctx = ctx.find_root()
    cmd: click.Command = cctx.command
    for name in command:
        sub = cmd.get_command(cctx, name) if isinstance(cmd, click.Group) else None
        if sub is None:
            raise click.UsageError(f"no such command '{' '.join(command)}' (see 'ha-manager help')", ctx)
        cctx = click.Context(sub, info_name=name, parent=cctx)
        cmd = sub
    click.echo(cmd.get_help(cctx))
    if verbose and isinstance(cmd, click.Group):
        _help_all(cmd, cctx)


def _help_all(group: click.Group, parent: click.Context) -> None:
    for name in group.list_commands(parent):
        sub = group.get_command(parent, name)
        if sub is None or sub.hidden:
            continue
        sctx = click.Context(sub, info_name=name, parent=parent)
        click.echo(f"\n{'-' * 78}\n")
        click.echo(sub.get_help(sctx))
        if isinstance(sub, click.Group):
            _help_all(sub, sctx)


@main.command()
@pass_ctx
def shell(c: Ctx) -> None:
    """Interactive shell with history and completion (commands without 'ha-manager')."""
    if c.interactive:
        die("already in the shell", ExitCode.USAGE)
    try:
        from cli.shell import run_shell  # noqa: PLC0415 - prompt_toolkit is only needed here
    except ImportError as e:
        die(f"the shell needs the 'prompt_toolkit' package ({e})", 1)

    sys.exit(run_shell(main, c))


@main.command()
@click.argument("shell_name", metavar="SHELL", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell_name: str) -> None:
    """Print the completion script for SHELL: eval "$(ha-manager completion bash)"."""
    from click.shell_completion import get_completion_class  # noqa: PLC0415

    cls = get_completion_class(shell_name)
    assert cls is not None
    click.echo(cls(main, {}, "ha-manager", "_HA_MANAGER_COMPLETE").source())


@main.command()
@click.argument("name")
@click.option("--role", "key_role", type=click.Choice(ROLES), required=True, help="What the key may do.")
@click.option("--force", is_flag=True, help="Replace an existing key.")
@pass_ctx
def keygen(c: Ctx, name: str, key_role: str, force: bool) -> None:
    """Create client key NAME (admin or readonly); running nodes accept it within a second."""
    try:
        path = generate_client_key(c.cluster, name, key_role, force=force)
    except ApiError as e:
        die(e.message, e.code)
    click.echo(f"{path}")


@main.command()
@click.argument("name")
@click.option("--role", "key_role", type=click.Choice(ROLES), help="Only the key of this role.")
@pass_ctx
def keyrevoke(c: Ctx, name: str, key_role: str | None) -> None:
    """Remove client key NAME; every node refuses it within a second, open connections too."""
    try:
        removed = revoke_client_key(c.cluster, name, key_role)
    except ApiError as e:
        die(e.message, e.code)
    for p in removed:
        click.echo(f"removed {p}")


def run(argv: Sequence[str] | None = None) -> None:
    """Console entry point: every error is one line on stderr and an exit code (docs/CLI.md)."""
    try:
        main.main(args=argv, prog_name="ha-manager", standalone_mode=False)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.ClickException as e:
        # click's usage errors keep exit 2, but as one line like ours
        cmd = e.ctx.command_path if isinstance(e, click.UsageError) and e.ctx is not None else "ha-manager"
        click.echo(f"{cmd}: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(ExitCode.INTERRUPTED)
    except KeyboardInterrupt:
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(0)


if __name__ == "__main__":
    run()
