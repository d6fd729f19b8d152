"""Self-fencing building blocks shared by ``ha-watchdog`` and ``ha-node``.

Standard library only (``ha-watchdog`` and the QEMU guest test run this code
with nothing else installed): the Linux watchdog device API
(:mod:`fence.device`), killing a node's services and daemon
(:mod:`fence.kill`), keeping the watchdog process alive under pressure
(:mod:`fence.hardening`) and suspend-aware clocks (:mod:`fence.clock`).
"""
