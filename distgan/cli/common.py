"""What every command group shares: the console (stderr), its message helpers and a progress bar.

The console prints text as given (`markup=False`): paths and values a user supplies (`exp[v2]/ck`, a `[/]` in a
folder name) are never read as rich markup. Colour comes only from the helpers, which style their own prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)  # no wrapping inside paths


def _say(prefix: str, style: str, message: object) -> None:
    console.print(Text.assemble((prefix, style), " ", str(message)))


def error(message: object) -> None:
    """`error: MESSAGE`, the prefix red, the message literal."""
    _say("error:", "red", message)


def warn(message: object) -> None:
    _say("skipped:", "yellow", message)


def ok(prefix: str, message: object) -> None:
    """A success line: `prefix` green, then the message literal."""
    _say(prefix, "green", message)


@contextmanager
def _progress(what: str, total: int) -> Iterator[Callable[[int], None]]:
    columns = (
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False, disable=not console.is_terminal) as bar:
        task = bar.add_task(what, total=total)
        yield lambda n: bar.advance(task, n)
    console.print(f"{what}: {total} done")
