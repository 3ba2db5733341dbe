"""The evaluation event: metrics of the sampling generator every eval.every steps (and at the end of a run),
logged; a new best of eval.best_metric is kept as checkpoints/best.

Its state (the best value so far, its step, the step of the last evaluation) is its own, registered with the
Checkpointer as "eval"; checkpoints written before it had its own state kept the same keys in the trainer's.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from torch import nn

from distgan.config import LOWER_IS_BETTER
from distgan.eval.evaluate import Evaluator
from distgan.run.checkpoint import Checkpointer
from distgan.run.tracking import Tracker


class EvalEvent:
    state_name = "eval"

    def __init__(
        self,
        evaluator: Evaluator,
        metric: str,
        tracker: Tracker,
        checkpointer: Checkpointer | None,
        sample_model: Callable[[], nn.Module],
    ) -> None:
        self.evaluator, self.metric, self.tracker = evaluator, metric, tracker
        self.checkpointer, self.sample_model = checkpointer, sample_model
        self.best: float | None = None
        self.step, self.last_eval_step = 0, -1
        self.recorded = False

    def __call__(self, step: int) -> dict[str, float]:
        """Call on all ranks."""
        t0 = time.perf_counter()
        if not self.recorded:
            self.tracker.record("eval_protocol", self.evaluator.protocol)  # printed at set-up, kept beside the numbers
            self.recorded = True
        result = self.evaluator(self.sample_model())
        value = result[self.metric]
        better = self.best is None or (value < self.best if LOWER_IS_BETTER[self.metric] else value > self.best)
        if better:
            self.best, self.step = value, step
        self.last_eval_step = step
        logged = {f"eval/{k}": v for k, v in result.items()}
        logged[f"eval/best_{self.metric}"] = self.best  # type: ignore[assignment]
        logged["eval/best_step"] = self.step
        logged["eval/time_s"] = time.perf_counter() - t0
        self.tracker.log_metrics(step, logged)
        if better and self.checkpointer is not None:
            path = self.checkpointer.save(step, name="best")
            self.tracker.info(f"new best {self.metric}={value:.4g} at step {step}: {path}")
        return result

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_metric": self.metric,
            "best": self.best,
            "best_step": self.step,
            "last_eval_step": self.last_eval_step,
            "protocol": self.evaluator.protocol,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("best_metric") == self.metric:  # a best of another metric means nothing here
            self.best, self.step = state.get("best"), state.get("best_step", 0)
        self.last_eval_step = state.get("last_eval_step", -1)
