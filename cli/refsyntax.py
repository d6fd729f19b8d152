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

import os
from collections.abc import Sequence
from typing import Any

import click
from click.shell_completion import BashComplete, CompletionItem, add_completion_class, split_arg_string


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


class ColonBashComplete(BashComplete):
    """bash completion for ``TYPE:NAME`` ids: bash splits words at ``:`` (``COMP_WORDBREAKS``),
    so ``migrate proc:g1 <Tab>`` reaches us as ``proc``, ``:``, ``g1``. The words are joined
    again, and for a split current word the values are cut to what bash replaces (after ``:``)."""

    _cut = ""  # the "TYPE:" bash does not replace in the current word

    def get_completion_args(self) -> tuple[list[str], str]:
        cwords = split_arg_string(os.environ["COMP_WORDS"])
        cword = int(os.environ["COMP_CWORD"])
        words: list[str] = []
        glue = False
        for i, w in enumerate(cwords[: cword + 1]):
            if w == ":" and words:
                words[-1] += w
                glue = True
            elif glue and i > 0:
                words[-1] += w
                glue = False
            else:
                words.append(w)
        joined_current = cword < len(cwords) and (
            cwords[cword] == ":" or (cword > 0 and cwords[cword - 1] == ":")
        )
        if cword >= len(cwords):
            words.append("")
        incomplete = words.pop() if words else ""
        self._cut = incomplete.rpartition(":")[0] + ":" if joined_current and ":" in incomplete else ""
        return words[1:], incomplete

    def format_completion(self, item: CompletionItem) -> str:
        value = str(item.value)
        if self._cut and value.startswith(self._cut):
            item = CompletionItem(value[len(self._cut) :], type=item.type, help=item.help)
        return super().format_completion(item)


add_completion_class(ColonBashComplete, "bash")
