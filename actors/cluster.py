"""A local cluster's bootstrap file, ``DIR/cluster.json``, and the paths derived from it.

Written by ``ha-cluster init``; read by every ``ha-node``. It names the
members and their bus endpoints, the store, the keys and the timing. The
cluster's records (resources.cfg, manager_status, ...) live in the store.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ha.constants import Timing as CoreTiming
from ha.errors import ConfigError
from store.timing import Timing

CLUSTER_FILE = "cluster.json"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")


@dataclass
class ClusterConfig:
    root: Path
    cluster: str
    nodes: dict[str, str]  # node name -> bus endpoint (tcp://host:port)
    curve: bool = True
    timing: Timing = field(default_factory=Timing)
    max_workers: int = 4
    # how often the watchdog actor considers a pet (well below the client timeout)
    pet_interval: float = 0.1
    # seconds a worker may run one agent command before it is declared hung
    command_timeout: float = 60.0
    cgroups: bool = True
    # node name -> network namespace the node runs in (partition tests), optional
    netns: dict[str, str] = field(default_factory=dict)
    # what ``ha-cluster init --netns`` created (cli/netns.py), for partition/heal/destroy
    network: dict[str, Any] | None = None

    # -- paths ----------------------------------------------------------------
    @property
    def store_dir(self) -> Path:
        return self.root / "store"

    @property
    def keys_dir(self) -> Path:
        return self.root / "keys"

    @property
    def state_dir(self) -> Path:
        """Resource agents' per-node state (agents/proc.py: ``<state>/<node>/proc``)."""
        return self.root / "state"

    def run_dir(self, node: str) -> Path:
        return self.root / "run" / node

    def log_file(self, node: str) -> Path:
        return self.root / "logs" / f"{node}.log"

    def watchdog_socket(self, node: str) -> Path:
        return self.run_dir(node) / "watchdog.sock"

    def core_timing(self) -> CoreTiming:
        """The core's timings for live rounds: ticks of ``renew_interval``, short fence delay."""
        t = self.timing
        return CoreTiming(
            fence_delay=t.fence_delay,
            gone_delete_delay=3600.0,
            crm_loop=t.renew_interval,
            lrm_loop=t.renew_interval,
            lrm_maintenance_loop=t.renew_interval,
            wait_sleep=t.renew_interval,
            lock_max_seconds=0.0,  # no blocking retries: the next tick retries
            lrm_restart_give_up=90.0,
            worker_slot_budget=0.0,
            # idle limits in rounds: keep the reference's wall-clock order of magnitude
            crm_max_idle_rounds=int(900 / t.renew_interval),
            lrm_max_idle_rounds=int(600 / t.renew_interval),
        )

    # -- file -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        t = self.timing
        return {
            "cluster": self.cluster,
            "nodes": {n: {"endpoint": e} for n, e in sorted(self.nodes.items())},
            "curve": self.curve,
            "timing": {
                "lease_ttl": t.lease_ttl,
                "renew_interval": t.renew_interval,
                "watchdog_timeout": t.watchdog_timeout,
                "margin": t.margin,
                "fence_delay": t.fence_delay,
            },
            "max_workers": self.max_workers,
            "command_timeout": self.command_timeout,
            "cgroups": self.cgroups,
            "netns": dict(self.netns),
            "network": self.network,
        }

    def save(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / CLUSTER_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, root: str | Path) -> ClusterConfig:
        root = Path(root).resolve()
        path = root / CLUSTER_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError("no cluster here (run 'ha-cluster init' first)", str(path)) from None
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot read: {e}", str(path)) from None
        if not isinstance(data, dict):
            raise ConfigError("expected a JSON object", str(path))
        nodes_raw = data.get("nodes")
        if not isinstance(nodes_raw, dict) or not nodes_raw:
            raise ConfigError("'nodes' must map node names to {endpoint}", str(path))
        nodes: dict[str, str] = {}
        for name, spec in nodes_raw.items():
            if not _NAME.match(name):
                raise ConfigError(f"invalid node name '{name}'", str(path))
            endpoint = spec.get("endpoint") if isinstance(spec, dict) else None
            if not isinstance(endpoint, str) or not endpoint.startswith("tcp://"):
                raise ConfigError(f"node '{name}': endpoint must be tcp://HOST:PORT", str(path))
            nodes[name] = endpoint
        timing = Timing.from_mapping(data.get("timing") or {}, str(path))
        cfg = cls(
            root=root,
            cluster=str(data.get("cluster") or "pyha"),
            nodes=nodes,
            curve=bool(data.get("curve", True)),
            timing=timing,
            max_workers=int(data.get("max_workers", 4)),
            command_timeout=float(data.get("command_timeout", 60.0)),
            cgroups=bool(data.get("cgroups", True)),
            netns={str(k): str(v) for k, v in (data.get("netns") or {}).items()},
            network=data.get("network") if isinstance(data.get("network"), dict) else None,
        )
        if cfg.max_workers < 1:
            raise ConfigError("max_workers must be >= 1", str(path))
        return cfg
