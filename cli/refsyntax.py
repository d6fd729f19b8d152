"""The reference's command-line syntax on top of click (BEHAVIOUR.md §8, docs/CLI.md "Syntax").

The reference's ``ha-manager`` (PVE's CLI handler) takes an option as
``-opt`` or ``--opt``, with its value as the next word or after ``=``, and a
boolean option given bare means 1: ``ha-manager set vm:100 -state disabled``,
``groupadd mygroup2 -nodes "node1,node2" -restricted``. click only knows
``--opt``; :class:`RefCommand` rewrites a single-dash word that names one
of the command's long options into its ``--`` form before click parses,
and :func:`bool_option_kwargs` makes a 0/1 option's value optional
(bare = ``1``). Short options (``-h``) and negative numbers keep their
meaning.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click


def long_options(cmd: click.Command) -> set[str]:
    """The ``--name`` spellings of the command's options."""
    return {o for p in cmd.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)
            if o.startswith("--")}  # fmt: skip


def reference_args(cmd: click.Command, args: Sequence[str]) -> list[str]:
    """``args`` with ``-opt`` / ``-opt=value`` written ``--opt`` / ``--opt=value``
    where ``--opt`` is an option of ``cmd``; everything after ``--`` is left alone."""
    longs = long_options(cmd)
    out: list[str] = []
    rest = False
    for a in args:
        rest = rest or a == "--"
        single = not rest and len(a) > 2 and a[0] == "-" and a[1] != "-"
        out.append(f"-{a}" if single and f"-{a.partition('=')[0]}" in longs else a)
    return out


class RefCommand(click.Command):
    """A command that also takes the reference's ``-opt`` spelling."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, reference_args(self, args))


class RefGroup(click.Group):
    """A group whose options and subcommands (at any depth) take ``-opt`` too."""

    command_class = RefCommand
    group_class = type  # subgroups are RefGroups too

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        # only the group's own options, up to the subcommand's name: a subcommand's
        # option with the same name as one of ours is rewritten by the subcommand
        head: list[str] = []
        for i, a in enumerate(args):
            if not a.startswith("-") and (not head or not _takes_value(self, head[-1])):
                return super().parse_args(ctx, [*reference_args(self, head), *args[i:]])
            head.append(a)
        return super().parse_args(ctx, reference_args(self, head))


def _takes_value(cmd: click.Command, word: str) -> bool:
    """Does option ``word`` (as typed, ``-opt`` or ``--opt``) of ``cmd`` take the next word?"""
    if "=" in word:
        return False
    name = word if word.startswith("--") else f"-{word}"
    for p in cmd.params:
        if isinstance(p, click.Option) and (name in p.opts or word in p.opts):
            return not p.is_flag and not p.count
    return False


def bool_option_kwargs() -> dict[str, Any]:
    """A 0/1 option that may be given bare, meaning 1 (``-restricted``)."""
    return {"type": click.Choice(["0", "1"]), "is_flag": False, "flag_value": "1"}
