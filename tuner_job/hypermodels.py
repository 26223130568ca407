"""Hypermodels: the built-in ToonVision CNN, and the user's own.

A hypermodel is a function `build(hp) -> compiled keras.Model`. The input shape
and the number of classes come from the dataset: a user function that takes
`input_shape` and/or `num_classes` keyword arguments is given them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tuner_job.errors import HypermodelError

__all__ = ["build_toonvision", "load_hypermodel", "BUILTIN"]


def _pool(side_h: int, side_w: int, size: int) -> tuple[int, int]:
    """A pool window that never shrinks a side below one pixel.

    The seed's space allows 4x4x4x4 = 256x pooling, but a 200 px side gives out
    after 128x; the window is clipped to what is left of each side, so every
    point of the space builds (the hyperparameter's value is unchanged).
    """
    return (max(1, min(size, side_h)), max(1, min(size, side_w)))


def build_toonvision(hp: Any, input_shape: tuple[int, int, int] = (600, 200, 3), num_classes: int = 4) -> Any:
    """The article's CNN and search space (two Conv2D -> MaxPool -> MaxPool -> Dropout blocks)."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.RandomFlip("horizontal")(x)
    height, width = input_shape[0], input_shape[1]
    pools = iter(range(1, 5))
    for block in (1, 2):
        x = layers.Conv2D(
            filters=hp.Int(f"conv_{block}_filters", min_value=4, max_value=16, step=4),
            kernel_size=hp.Choice(f"conv_{block}_kernel_size", values=[3, 5]),
            activation="relu",
            padding="same",
        )(x)
        for min_value in (2, 1):  # the second pool may be 1: that voids it
            size = _pool(height, width, hp.Int(f"pool_{next(pools)}_size", min_value=min_value, max_value=4, step=1))
            x = layers.MaxPooling2D(pool_size=size)(x)
            height, width = height // size[0], width // size[1]
        x = layers.Dropout(rate=hp.Float(f"dropout_{block}_rate", min_value=0.0, max_value=0.9, step=0.1))(x)
    x = layers.Flatten()(x)
    outputs = layers.Dense(units=num_classes, activation="softmax")(x)
    model = keras.Model(inputs=inputs, outputs=outputs, name="toonvision")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


BUILTIN: dict[str, Callable[..., Any]] = {"toonvision": build_toonvision}


def _import_function(spec: str) -> Callable[..., Any]:
    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" not in spec:
        raise HypermodelError(
            f"hypermodel {spec!r} is neither built in ({', '.join(BUILTIN)}) nor 'package.module:function' or 'path/file.py:function'"
        )
    target, _, name = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise HypermodelError(f"hypermodel file not found: {path}")
        module_name = f"_tuner_job_user_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)  # type: ignore[arg-type]
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        except Exception as exc:
            raise HypermodelError(f"hypermodel file {path} failed to import: {exc.__class__.__name__}: {exc}") from None
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise HypermodelError(f"hypermodel module {target!r} cannot be imported: {exc}") from None
    function = getattr(module, name, None)
    if not callable(function):
        raise HypermodelError(f"hypermodel {spec!r}: {target} has no function {name!r}")
    return function


def load_hypermodel(spec: str, input_shape: tuple[int, int, int], num_classes: int) -> Callable[[Any], Any]:
    """`build(hp) -> compiled keras.Model` for a built-in name, `package.module:function` or `path/file.py:function`.

    Args:
        spec: the config's `hypermodel`.
        input_shape: (height, width, 3), given to a function that takes `input_shape`.
        num_classes: the number of classes, given to a function that takes `num_classes`.

    Raises:
        HypermodelError: the spec names nothing importable or callable (here),
            or `build` returns something that is not a compiled `keras.Model` (when called).
    """
    function = _import_function(spec)
    parameters = inspect.signature(function).parameters
    given = {k: v for k, v in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)) if k in parameters}
    function = functools.partial(function, **given) if given else function

    def build(hp: Any) -> Any:
        import keras

        model = function(hp)
        if not isinstance(model, keras.Model):
            raise HypermodelError(f"hypermodel {spec!r} returned {type(model).__name__}, not a keras.Model")
        if not model.compiled:
            raise HypermodelError(f"hypermodel {spec!r} returned a model that is not compiled: call model.compile(...)")
        return model

    build.__name__ = getattr(function, "__name__", "build")
    return build
