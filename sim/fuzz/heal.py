"""Healing after the schedule: deterministic commands that bring every node back (docs/fuzzing.md)."""

from __future__ import annotations

from sim.fuzz.commands import shutdown_pending
from sim.hardware import Hardware

#: a node still shutting down this long into the heal phase is powered off (a hung shutdown)
STUCK_SHUTDOWN = 300


class Healer:
    """Deterministic heal commands for the cluster's current state (no randomness)."""

    def __init__(self) -> None:
        self.pending_since: dict[str, int] = {}

    def batch(self, hw: Hardware) -> list[str]:
        out: list[str] = [f"config {name} restore" for name in sorted(hw.corrupt)]
        request = hw.manager_status.node_request or {}
        for name in sorted(hw.nodes):
            node = hw.nodes[name]
            pending = shutdown_pending(node)
            if node.power == "off":
                out.append(f"power {name} on")
            elif pending:
                since = self.pending_since.setdefault(name, hw.time)
                if hw.time - since >= STUCK_SHUTDOWN:
                    out.append(f"power {name} off")
                    self.pending_since.pop(name, None)
                continue
            else:
                if node.network == "off":
                    out.append(f"network {name} on")
                if node.crm is None:
                    out.append(f"crm {name} start")
            self.pending_since.pop(name, None)
            if (
                request.get(name, {}).get("maintenance")
                or f"enable-node-maintenance {name}\n" in hw.crm_commands
            ):
                out.append(f"crm {name} disable-node-maintenance")
        return out


def cluster_healthy(hw: Hardware) -> bool:
    if hw.corrupt:
        return False
    for node in hw.nodes.values():
        if node.power != "on" or node.network != "on" or node.crm is None or node.lrm is None:
            return False
        if shutdown_pending(node):
            return False
    return not any((r or {}).get("maintenance") for r in (hw.manager_status.node_request or {}).values())
