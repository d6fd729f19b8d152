"""``ha-node --node NAME --cluster DIR``: run one node of a cluster.

SIGTERM/SIGINT start an orderly shutdown under the cluster's shutdown policy;
the kind is read from ``DIR/run/NAME/shutdown-request`` (``shutdown``,
``reboot`` or ``restart``; default ``shutdown``), which ``ha-cluster`` writes.
Exit codes: 0 orderly stop, 1 bad configuration (or this node's ha-node already
runs), 2 the node took itself down after a failure (its watchdog fences it) or
fenced itself because its watchdog could not.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys
from types import FrameType

import click
from loguru import logger

from actors.node import NodeRuntime
from admin.cluster import ClusterConfig
from admin.private import private_umask
from ha.errors import ConfigError, HaError

LOG_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} {level: <7} {extra[ident]: >12}: {message}"


def setup_logging(node: str, logfile: str | None, level: str) -> None:
    logger.remove()
    logger.configure(extra={"ident": f"{node}/-"})
    logger.add(sys.stderr, format=LOG_FORMAT, level=level, enqueue=False)
    if logfile:
        logger.add(logfile, format=LOG_FORMAT, level="DEBUG", enqueue=False)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--node", required=True, help="This node's name (a member of the cluster).")
@click.option(
    "--cluster", "cluster_dir", required=True, type=click.Path(file_okay=False), help="Cluster directory."
)
@click.option(
    "--store",
    "store_url",
    help="Override the cluster's store for this node: 'dir' or etcd://h:p,.../cluster (e.g. this host's "
    "own list of etcd endpoints).",
)
@click.option("--log-level", default="INFO", show_default=True)
def main(node: str, cluster_dir: str, store_url: str | None, log_level: str) -> None:
    """Run one HA node: CRM, LRM, workers and watchdog actors over the bus."""
    private_umask()  # issue #11: records, logs, state and sockets are root's alone
    try:
        cluster = ClusterConfig.load(cluster_dir)
        if store_url is not None:
            cluster.store = store_url
            problems = cluster.store_problems()
            if problems:
                raise ConfigError("; ".join(problems), "--store")
        cluster.log_file(node).parent.mkdir(parents=True, exist_ok=True)
        setup_logging(node, str(cluster.log_file(node)), log_level)
        runtime = NodeRuntime(cluster, node)
        runtime.claim()
    except (HaError, ValueError, OSError) as e:
        click.echo(f"ha-node: {e}", err=True)
        sys.exit(1)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        runtime.request_shutdown()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # `kill -USR2` (ha-cluster down/stop do it before killing a node that did not stop):
    # every thread's stack into the node's log, to tell where it hung
    faulthandler.register(signal.SIGUSR2, file=sys.stderr, all_threads=True)
    try:
        runtime.start()
    except Exception as e:
        logger.opt(exception=e).bind(ident=f"{node}/node").critical(f"cannot start: {e}")
        sys.stderr.flush()
        os._exit(1)
    # Signals interrupt the wait (their handler runs on this thread, then the wait goes on),
    # so a long timeout costs no reaction time: this thread wakes only when the node is done.
    while not runtime.done.wait(60.0):
        pass
    logger.complete()
    sys.stderr.flush()
    # a worker abandoned inside a hung agent call may still hold a thread: do not wait for it
    os._exit(runtime.exit_code)


if __name__ == "__main__":
    main()
