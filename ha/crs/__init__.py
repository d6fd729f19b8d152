"""Cluster resource scheduling: the ``static`` and ``dynamic`` schedulers (BEHAVIOUR.md §5.10-§5.12)."""
