"""Live fault injection, in the spirit of Jepsen's nemesis: ``python -m bench chaos``.

    python -m bench chaos --minutes M --seed S [--nodes 3|5] [--store dir|etcd] [--services N]
                          [--kinds K1,K2,...] [--settle S] [--cover] [--fail-fast]
                          [--both-kill-gap S] [--both-stop-gap S] [--dir DIR] [--json]

A live cluster (bench/livecluster.py: real ``ha-node`` processes, their
``ha-watchdog``s, N demo HTTP services with markers) gets a random but seeded
schedule of faults until M minutes are used up (no new fault starts after
that). Every fault hits one node at most and is healed before the next one
starts, so a majority always stays. After every step the services' markers
(agents/markers.py: flock ``overlap`` lines, start/alive/stop intervals) are
checked for double runs; a poller thread asks every service over HTTP about
every 100 ms and keeps, per service, the longest time no copy answered and the
fault going on when it stopped answering. At the end everything is healed and
the cluster gets ``--settle`` seconds until every service answers again.

Fault kinds (``--kinds``; weights in :data:`WEIGHTS`, hold times in :data:`HOLD_S`):

``node_kill``       ``ha-cluster kill``: the node's whole tree (a host crash; on etcd with its
                    member), restarted with ``ha-cluster up`` after a random hold
``daemon_kill``     SIGKILL of ``ha-node`` only (its watchdog must fence the node)
``daemon_stop``     SIGSTOP of ``ha-node`` for 0.5-8 s, then SIGCONT
``watchdog_kill``   SIGKILL of ``ha-watchdog`` only
``watchdog_stop``   SIGSTOP of ``ha-watchdog`` for 0.5-8 s, then SIGCONT
``both_kill``       SIGKILL ``ha-watchdog``, wait :data:`BOTH_KILL_GAP_S`, SIGKILL ``ha-node``
``both_stop``       SIGSTOP ``ha-watchdog``, wait :data:`BOTH_STOP_GAP_S`, SIGSTOP ``ha-node``,
                    hold 0.5-8 s, SIGCONT both
``service_kill``    SIGKILL of one service's process group (its pid from its HTTP answer)
``partition``       ``ha-cluster partition`` of one node, ``heal`` after a random hold
                    (network namespaces: the cluster is created with them)
``etcd_kill``       SIGKILL of one etcd member, restarted after a random hold (``--store etcd``)
``lrm_restart``     ``ha-cluster stop NODE --kind restart``, then ``up``
``migrate``         ``ha-manager migrate`` of a random service to a random other node
``config_corrupt``  random bytes (always one that is not UTF-8) into a random config file
                    (``resources.cfg``, ``rules.cfg``, ``groups.cfg``, ``datacenter.cfg``) for a
                    random hold, then the original back; a service that stops answering or a
                    node that fences meanwhile is ``config_harm`` (issue #10)

Healing a node: SIGCONT what was stopped, heal its partition, restart its etcd
member, and ``ha-cluster up NODE`` once its ``ha-node`` is gone (a node that
fenced itself exits: ha-node with code 2, its watchdog with code 3); the node
counts as back once its LRM writes its status again (it is quorate). A daemon
that keeps running without its watchdog for :data:`UNWATCHED_GRACE_S` is an
anomaly (reported; the node is killed and restarted).

The schedule first goes through every enabled kind once in a seeded random
order, then draws kinds by weight; ``--cover`` keeps going past M minutes
(at most :data:`COVER_LIMIT` times M) until that first round is complete. A
node fault hits, with probability :data:`BUSY_NODE_P`, a node that runs a
service, else any node. The seed fixes the kinds, hold times, pauses and
draws; which node a draw lands on depends on where the services run by then,
and the cluster's own timing is not repeatable.

The result (``--json``: the last line) names the faults injected by kind, the
double runs found (``double_runs``, must be empty: one entry per copy that
still ran while its service was started again, with when it first happened
and during which fault), the services not answering after the settle period
(``unavailable_at_end``, must be 0), services answering from another node
than the cluster thinks (``misplaced_at_end``: an orphaned copy), the longest
unavailability (service and fault), how often a node fenced itself (watchdog
``FIRING`` lines, ha-node exits with code 2 from its log) and the gaps used
for ``both_*``. Exit code 0 when there was no double run and every service
answers at the end and no config corruption did harm, else 1 (130 when interrupted). Progress, one line per
fault, goes to stderr. The cluster is always torn down, also on Ctrl-C,
SIGTERM or errors, and whatever still runs with a path of the run in its
command line is killed (``leftover_processes`` counts those).
"""

from bench.chaos.command import main

__all__ = ["main"]
