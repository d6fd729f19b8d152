"""admin package: the application layer between the tools (CLI, node API) and the store.

What a cluster is: ``cluster.py`` (``cluster.json``, the paths derived from
it, how to open its store) and ``timing.py`` (the lease and watchdog timing
and its safety rule).

What an administrator may do to it: ``ops.py`` (the node API's operations,
:class:`~admin.ops.ApiOps`, with their argument checks), over the modules
that read and edit the config files: ``configfiles.py`` (strict reads,
compare-and-swap edits), ``views.py`` (records as the API shows them),
``resources.py``, ``groups.py``, ``rules.py``, and ``commands.py`` (CRM
commands). ``errors.py`` holds the one table of exit codes and the
:class:`~admin.errors.AdminError` every refusal carries.

Nothing here runs a thread or opens a socket: the node's API actor
(``actors/api.py``) and ``ha-manager --offline`` call these functions.
Importing the package imports nothing else (the CLI pays only for what it
uses).
"""
