"""A running node follows the cluster's membership in ``cluster.json`` (issue #15).

``ha-cluster add-node`` and ``remove-node`` change the members one at a time and
raise ``config_version`` (docs/OPERATIONS.md, "Adding and removing nodes"). Each
running node looks at ``cluster.json`` every tick (one ``stat``); when it changed
and its members differ from the ones the node runs by, :class:`MembershipFollower`
checks the change and hands it to the node, which reconnects its bus links,
counts votes by the new list, tells its daemons and its API, and writes
``nodes/<node>/membership`` (the version it now runs by) so that ``ha-cluster``
knows when every running member has followed.

Refused, with an error in the node's log and the old members kept: more than one
member added or removed at once (:func:`bus.membership.one_member_change`, the
SAFETY rule), an endpoint of a member changed, this node itself no longer listed
(a node is removed only after it stopped), a missing key file of a new member.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from loguru import logger

from admin.cluster import CLUSTER_FILE, ClusterConfig
from bus.errors import BusError, KeyFileError
from bus.keys import CurveKeys
from bus.membership import Membership, one_member_change
from ha.errors import HaError


class MembershipFollower:
    """Notices a new membership in ``cluster.json`` and applies it through ``apply``.

    ``apply(config, membership, keys)`` runs on the caller's thread (the node's
    ticker); the follower remembers the members it last applied.
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        node: str,
        apply: Callable[[ClusterConfig, Membership, CurveKeys | None], None],
    ) -> None:
        self.root = cluster.root
        self.node = node
        self.curve = cluster.curve
        self.keys_dir = cluster.keys_dir
        self.nodes = dict(cluster.nodes)
        self.version = cluster.config_version
        self._apply = apply
        self._sig: tuple[int, int] | None = None
        self._refused: str | None = None
        self.log = logger.bind(ident=f"{node}/node")

    def _signature(self) -> tuple[int, int] | None:
        try:
            st = (Path(self.root) / CLUSTER_FILE).stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    def check(self) -> bool:
        """Look at ``cluster.json``; True when a new membership was applied."""
        sig = self._signature()
        if sig is None or sig == self._sig:
            return False
        try:
            new = ClusterConfig.load(self.root)
        except HaError as e:
            self.log.warning(f"cluster.json changed but cannot be read (kept the members): {e}")
            return False  # _sig unchanged: read again next tick
        self._sig = sig
        if new.nodes == self.nodes:
            self.version = new.config_version
            return False
        problem = self._problem(new)
        if problem is not None:
            if problem != self._refused:
                kept = sorted(self.nodes)
                self.log.error(f"membership in cluster.json not applied (kept {kept}): {problem}")
            self._refused = problem
            return False
        keys = None
        if self.curve:
            try:
                keys = CurveKeys.load(self.keys_dir, self.node, required=new.nodes)
            except KeyFileError as e:
                self.log.error(f"membership in cluster.json not applied yet: {e}")
                self._sig = None  # retried next tick: the key files may be on their way
                return False
        membership = Membership.of(sorted(new.nodes.items()))
        try:
            self._apply(new, membership, keys)
        except BusError as e:  # the bus still applies the previous change: next tick again
            self.log.warning(f"membership in cluster.json not applied yet: {e}")
            self._sig = None
            return False
        self.nodes, self.version, self._refused = dict(new.nodes), new.config_version, None
        return True

    def _problem(self, new: ClusterConfig) -> str | None:
        if self.node not in new.nodes:
            return "this node is not listed (stop a node before removing it: ha-cluster remove-node)"
        try:
            one_member_change(self.nodes, new.nodes)
        except HaError as e:
            return str(e)
        for n, endpoint in new.nodes.items():
            if n in self.nodes and self.nodes[n] != endpoint:
                return f"the endpoint of member {n} changed"
        return None
