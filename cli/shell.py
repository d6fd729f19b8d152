"""``ha-manager shell``: the commands at a prompt, with history and completion.

Lines are ``ha-manager`` commands without the program name (``status``,
``set proc:web --state stopped``, ``rules list``). Tab completes
subcommands, options, resource ids, groups, rules and node names (the same
completion ``ha-manager completion bash`` gives a shell, through click).
The connection to the cluster is kept open between commands. History is
kept in ``$PYHA_HISTORY`` (default ``~/.pyha_ha_manager_history``).
``exit``, ``quit`` or Ctrl-D leave; ``help`` lists the commands.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import click
from click.shell_completion import ShellComplete
from prompt_toolkit import PromptSession  # type: ignore[import-not-found, unused-ignore]
from prompt_toolkit.completion import (  # type: ignore[import-not-found, unused-ignore]
    CompleteEvent,
    Completer,
    Completion,
)
from prompt_toolkit.document import Document  # type: ignore[import-not-found, unused-ignore]
from prompt_toolkit.history import (  # type: ignore[import-not-found, unused-ignore]
    FileHistory,
    History,
    InMemoryHistory,
)

from admin.errors import ExitCode


class ShellContext(Protocol):
    """What the shell needs of ha-manager's context object (cli/ha_manager.py ``Ctx``)."""

    interactive: bool

    def close(self) -> None: ...


ENV_HISTORY = "PYHA_HISTORY"
PROMPT = "ha-manager> "


class ClickCompleter(Completer):  # type: ignore[misc, unused-ignore]
    """Completion from the click command tree, including the commands' dynamic values."""

    def __init__(self, cli: click.Command, obj: ShellContext) -> None:
        self.cli = cli
        self.obj = obj

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterable[Completion]:
        text = document.text_before_cursor
        try:
            words = shlex.split(text)
        except ValueError:
            return
        incomplete = ""
        if words and not text.endswith((" ", "\t")):
            incomplete = words.pop()
        if not words:
            for name in ("exit", "quit"):
                if name.startswith(incomplete):
                    yield Completion(name, start_position=-len(incomplete))
        comp = ShellComplete(self.cli, {"obj": self.obj}, "ha-manager", "_HA_MANAGER_COMPLETE")
        try:
            items = comp.get_completions(words, incomplete)
        except Exception:  # a half-typed line must never break the prompt
            return
        for item in items:
            if item.type != "plain":
                continue
            yield Completion(str(item.value), start_position=-len(incomplete), display_meta=item.help or "")


def _history() -> History:
    path = os.environ.get(ENV_HISTORY) or str(Path.home() / ".pyha_ha_manager_history")
    try:
        Path(path).touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()
    return FileHistory(path)


def run_shell(cli: click.Group, obj: ShellContext) -> int:
    obj.interactive = True
    session: PromptSession[str] = PromptSession(
        history=_history(), completer=ClickCompleter(cli, obj), complete_while_typing=False
    )
    code = 0
    while True:
        try:
            line = session.prompt(PROMPT)
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        try:
            words = shlex.split(line)
        except ValueError as e:
            click.echo(f"ha-manager: {e}", err=True)
            code = 2
            continue
        if not words:
            continue
        if words[0] in ("exit", "quit"):
            break
        try:
            cli.main(args=words, prog_name="ha-manager", standalone_mode=False, obj=obj)
            code = 0
        except click.exceptions.Exit as e:
            code = e.exit_code
        except click.ClickException as e:  # one line, as ha-manager's own (cli/ha_manager.py run)
            path = e.ctx.command_path if isinstance(e, click.UsageError) and e.ctx is not None else ""
            click.echo(f"{path or 'ha-manager'}: {e.format_message()}", err=True)
            code = e.exit_code
        except click.exceptions.Abort:
            code = 1
        except SystemExit as e:  # our one-line errors (die) end the command, not the shell
            code = e.code if isinstance(e.code, int) else 1
        except KeyboardInterrupt:
            code = ExitCode.INTERRUPTED
    obj.close()
    return code
