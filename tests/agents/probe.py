"""A fresh process that inspects or stops a proc service: ``python -m tests.agents.probe``.

Arguments: STATE_DIR CGROUP_BASE|- NODE SID CMD ACTION(check|stop). Prints
``running``/``stopped`` after the action.
"""

from __future__ import annotations

import sys

from agents.proc import ProcPlugin
from tests.agents.helpers import AgentEnv, conf


def main(argv: list[str]) -> None:
    state_dir, cg, node, sid, cmd, action = argv
    plugin = ProcPlugin(state_dir, cgroup_base=None if cg == "-" else cg, kill_wait=3.0)
    env = AgentEnv(node)
    cd = conf(sid, node, cmd=cmd)
    if action == "stop":
        plugin.shutdown(env.env, sid, cd, 2)
    print("running" if plugin.check_running(env.env, sid, cd) else "stopped")


if __name__ == "__main__":
    main(sys.argv[1:])
