"""admin package: the application layer between the tools (CLI, node API) and the store.

What a cluster is: ``cluster.py`` (``cluster.json``, the paths derived from
it, how to open its store) and ``timing.py`` (the lease and watchdog timing
and its safety rule).

Nothing here runs a thread or opens a socket. Importing the package imports
nothing else (the CLI pays only for what it uses).
"""
