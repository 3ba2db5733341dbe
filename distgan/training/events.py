"""What happens between steps, registered once: "every N steps (or when this holds) do X".

The loop counts steps and fires the schedule after each one; what the events act on (the tracker, the
checkpointer, the ranks' stop agreement, the evaluation event, the log step) comes to the Trainer as one `Outputs`.
Events run in the order they were registered (the order is part of the behaviour: a log row of step N is written
before the checkpoint of step N). An event that keeps state across a resume (the evaluation's best value) names it
(`state_name`) and training/build.py registers it with the checkpointer, as it does every part of the step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from distgan.dist import StopAgreement
from distgan.eval.event import EvalEvent
from distgan.run.checkpoint import Checkpointer
from distgan.run.tracking import Tracker
from distgan.training.logstep import LogStep


@dataclass
class Outputs:
    """What runs between steps writes through or decides with: the tracker (rank 0's console and files, a null one
    elsewhere), the log step, and, when the run has them, the checkpointer, the ranks' stop agreement and the
    evaluation event."""

    tracker: Tracker
    logstep: LogStep
    checkpointer: Checkpointer | None = None
    stop: StopAgreement | None = None
    eval: EvalEvent | None = None


@dataclass(frozen=True)
class Event:
    name: str
    when: Callable[[int], bool]
    run: Callable[[int], object]


def every(n: int) -> Callable[[int], bool]:
    """Due at steps n, 2n, ...; n <= 0: never."""
    return (lambda step: step % n == 0) if n > 0 else (lambda step: False)


class Schedule:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def on(self, name: str, when: Callable[[int], bool], run: Callable[[int], object]) -> None:
        """Registers `run(step)` to fire after every step where `when(step)` holds (step counted from 1)."""
        if any(e.name == name for e in self.events):
            raise ValueError(f"event {name!r} registered twice")
        self.events.append(Event(name, when, run))

    def fire(self, step: int) -> None:
        for event in self.events:
            if event.when(step):
                event.run(step)
