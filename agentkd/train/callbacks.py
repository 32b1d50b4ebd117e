"""Trainer callbacks: a rich progress bar with loss and ETA, and a stop-after-N-steps hook (tests, resume)."""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def _classes() -> tuple[type, type]:
    """The callback classes, built on first use: they subclass transformers' TrainerCallback, and importing
    this module must not import transformers (only training does)."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        """One rich bar on stderr: step / max_steps, the last train and eval loss, elapsed and ETA.
        Starts at the resumed step, so a resumed run's bar shows the whole run."""

        def __init__(self, description: str = "train"):
            self.description = description
            self.bar: Any = None
            self.task: Any = None
            self.loss: float | None = None
            self.eval_loss: float | None = None

        def _label(self) -> str:
            parts = [self.description]
            if self.loss is not None:
                parts.append(f"loss {self.loss:.4f}")
            if self.eval_loss is not None:
                parts.append(f"eval {self.eval_loss:.4f}")
            return "  ".join(parts)

        def on_train_begin(self, args, state, control, **kwargs):
            if not state.is_world_process_zero:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn(), console=Console(stderr=True))
            self.bar.start()
            self.task = self.bar.add_task(self._label(), total=state.max_steps, completed=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step, description=self._label())

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if "loss" in logs:
                self.loss = float(logs["loss"])
            if "eval_loss" in logs:
                self.eval_loss = float(logs["eval_loss"])
            if self.bar is not None:
                self.bar.update(self.task, description=self._label())

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step, description=self._label())
                self.bar.stop()
                self.bar = None


    class StopAfter(TrainerCallback):
        """Stop training (after saving a checkpoint) once `global_step` reaches `step`: an interruption that
        tests and `--stop-after` can produce on purpose."""

        def __init__(self, step: int):
            self.step = step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step >= self.step:
                control.should_save = True
                control.should_training_stop = True
            return control

    return RichProgress, StopAfter


def RichProgress(description: str = "train") -> Any:
    """One rich bar on stderr: step / max_steps, the last train and eval loss, elapsed and ETA."""
    return _classes()[0](description)


def StopAfter(step: int) -> Any:
    """Stop training (after saving a checkpoint) once `global_step` reaches `step`."""
    return _classes()[1](step)


def is_progress(callback: Any) -> bool:
    return isinstance(callback, _classes()[0])
