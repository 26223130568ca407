"""How a trial's model is trained: through the hypermodel's `fit`, at the trial's batch size.

KerasTuner's `Tuner.run_trial` calls `hypermodel.fit(hp, model, *fit_args,
**fit_kwargs)`, and so does the worker (`fit_trial`): a `HyperModel` that
overrides `fit` (to tune the batch size, add callbacks, train its own way)
gets the worker's data, epochs and callbacks through it; the default `fit`
is `model.fit`, which reads the whole fit from one iterator (`fit_trial`).

The batch size of a trial is its `batch_size` hyperparameter when the
hypermodel declares one (`toonvision_extended` does), else the config's
`batch_size` (`trial_batch_size`). The data are `tf.data` pipelines, batched
already, and Keras's `fit` ignores a `batch_size=` argument for those without a
word; so when an overridden `fit` passes `batch_size=` to `model.fit` (how
KerasTuner's guide tunes it), that call gets the data batched to that size
instead. Either way the epoch's step count shows the batch size that was used.

What `fit` returns is kept too (`history_from_result`): a user `fit` that
trains without the worker's callbacks, or returns its own metrics (a dict, or
the objective as a number, as KerasTuner allows), still gives the trial its metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["BATCH_SIZE_HP", "BatchedData", "FitRecord", "trial_batch_size", "fit_trial", "history_from_result"]

#: The hyperparameter whose value, in a trial that has it, is the batch size `fit` uses.
BATCH_SIZE_HP = "batch_size"


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer() or value < 1:
        raise ValueError(f"{what} must be a whole number >= 1, but got {value!r}")
    return int(value)


def trial_batch_size(values: dict[str, Any], default: int) -> int:
    """The batch size of a trial with hyperparameter `values`: its `batch_size`, else `default` (the config's).

    Raises:
        ValueError: the trial's `batch_size` is not a whole number >= 1 (the trial fails).
    """
    value = values.get(BATCH_SIZE_HP)
    return default if value is None else _positive_int(value, f"hyperparameter {BATCH_SIZE_HP}")


class BatchedData:
    """The trial's inputs at each batch size asked for, each made once.

    Args:
        make: `batch_size -> TrialInputs` (`input_pipeline.make_datasets` over the
            worker's memory-mapped cache): `train` (one epoch), `train_endless`,
            `val`, `steps_per_epoch` (batches per epoch) and the `callback`
            that sets the epoch; anything with those attributes.
    """

    def __init__(self, make: Callable[[int], Any]):
        self._make = make
        self._made: dict[int, Any] = {}

    def __call__(self, batch_size: int) -> Any:
        if batch_size not in self._made:
            self._made[batch_size] = self._make(batch_size)
        return self._made[batch_size]


@dataclass
class FitRecord:
    """What a `fit_trial` call used: the batch size of the data `model.fit` was given."""

    batch_size: int


def fit_trial(hypermodel: Any, hp: Any, model: Any, data: BatchedData, batch_size: int, record: FitRecord, **fit_kwargs: Any) -> Any:
    """`hypermodel.fit(hp, model, train, validation_data=val, **fit_kwargs)` at `batch_size`; returns what it returns.

    `train` is one epoch of batches, as a `fit` of the user's or a training
    loop of their own expects. A `model.fit` call given `train` itself reads
    the pipeline's endless twin with `steps_per_epoch` instead (the call's
    own, if it gives one): one iterator for the whole fit
    (`input_pipeline`). Every `model.fit` call gets the callback that sets
    the pipeline's epoch, if the user's `fit` dropped it.

    Args:
        hypermodel: the `LoadedHypermodel` (its `fit` is the user's when they wrote one).
        hp: the trial's `HyperParameters`.
        model: the model `hypermodel` built for it.
        data: the inputs by batch size; their `callback` (each epoch's order) joins `callbacks`.
        batch_size: the trial's (`trial_batch_size`).
        record: set to the batch size `model.fit` trained at (a `batch_size=` the user's `fit` passed wins).
        fit_kwargs: epochs, initial_epoch, callbacks, verbose: passed on.
    """
    inputs = data(batch_size)
    train, val = inputs.train, inputs.val
    callbacks = [*(fit_kwargs.pop("callbacks", None) or []), inputs.callback]
    record.batch_size = batch_size
    model_fit = model.fit

    def fit(*args: Any, **kwargs: Any) -> Any:
        requested = kwargs.pop("batch_size", None)
        x = args[0] if args else kwargs.get("x")
        used = inputs
        if requested is not None and x is train:
            size = _positive_int(requested, "the batch_size given to model.fit")
            used = data(size)
            x = used.train
            if kwargs.get("validation_data") is val:
                kwargs["validation_data"] = used.val
            if kwargs.get("callbacks"):  # the epoch setter of the pipeline it now reads
                kwargs["callbacks"] = [used.callback if c is inputs.callback else c for c in kwargs["callbacks"]]
            record.batch_size = size
        if x is used.train:  # ours as given: the endless twin, so that Keras keeps one iterator
            x = used.train_endless
            kwargs.setdefault("steps_per_epoch", used.steps_per_epoch)  # a user's own count streams on across epochs
        if args:
            args = (x, *args[1:])
        elif "x" in kwargs:
            kwargs["x"] = x
        if used.callback not in (kwargs.get("callbacks") or []):  # else each epoch would read the same order
            kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), used.callback]
        return model_fit(*args, **kwargs)

    model.fit = fit  # only for this call: the user's fit reaches model.fit through it
    try:
        return hypermodel.fit(hp, model, train, validation_data=val, callbacks=callbacks, **fit_kwargs)
    finally:
        del model.fit


def history_from_result(result: Any, objective: str) -> dict[str, dict[str, float]]:
    """Per-epoch logs (`{"0": {metric: value}}`) from what a `fit` returned, for a trial whose callbacks saw no epoch.

    A `keras.callbacks.History` gives its epochs; a dict is one epoch's
    metrics; a number is the objective's value (KerasTuner reads them alike).
    Anything else gives nothing.
    """
    history = getattr(result, "history", None)
    if isinstance(history, dict):
        series = {str(k): v for k, v in history.items() if isinstance(v, list)}
        epochs = max((len(v) for v in series.values()), default=0)
        return {str(e): {k: float(v[e]) for k, v in series.items() if e < len(v) and _number(v[e])} for e in range(epochs)}
    if isinstance(result, dict):
        return {"0": {str(k): float(v) for k, v in result.items() if _number(v)}}
    if _number(result):
        return {"0": {objective: float(result)}}
    return {}


def _number(value: Any) -> bool:
    """A number (a Python, NumPy or tensor scalar; NaN counts: the objective's rules judge it), not a bool."""
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True
