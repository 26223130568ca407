"""Hypermodels: the built-in ToonVision CNNs, and the user's own, as KerasTuner takes them.

A hypermodel is what KerasTuner's tuners accept: a function
`build(hp) -> compiled keras.Model`, or a `keras_tuner.HyperModel` (its
`build`, its optional `declare_hyperparameters` and `fit`). Here it may also
be a `HyperModel` subclass, which is instantiated for the dataset. The input
shape and the number of classes come from the dataset: a function, or a
subclass's constructor, that takes `input_shape` and/or `num_classes` is given them.

`load_hypermodel` turns any of them into one `LoadedHypermodel`: its `build`
checks what comes back, its `fit` is the user's own when they wrote one (the
worker calls it as KerasTuner's `Tuner.run_trial` does: `trial_fit`).

Built in:
- `toonvision`: the article's CNN and search space, exactly.
- `toonvision_extended`: the same space plus what the article names and leaves
  out: 1 to 3 blocks (each with the article's per-block hyperparameters,
  conditional on the block existing), the optimizer, the learning rate, the
  activation and the batch size (used by `fit`, see `trial_fit`).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras_tuner

from tuner_job.config import hypermodel_file
from tuner_job.errors import HypermodelError

__all__ = ["build_toonvision", "build_toonvision_extended", "load_hypermodel", "LoadedHypermodel", "BUILTIN"]

#: The article's CNN has two blocks; `toonvision_extended` searches 1 to this many.
MAX_BLOCKS = 3


def _pool(side_h: int, side_w: int, size: int) -> tuple[int, int]:
    """A pool window that never shrinks a side below one pixel.

    The seed's space allows 4x4x4x4 = 256x pooling, but a 200 px side gives out
    after 128x; the window is clipped to what is left of each side, so every
    point of the space builds (the hyperparameter's value is unchanged).
    """
    return (max(1, min(size, side_h)), max(1, min(size, side_w)))


def _conv_block(hp: Any, x: Any, block: int, sides: tuple[int, int], activation: str) -> tuple[Any, tuple[int, int]]:
    """The article's block `block`: Conv2D -> MaxPool -> MaxPool (1 voids it) -> Dropout; returns it and the sides left."""
    from keras import layers

    x = layers.Conv2D(
        filters=hp.Int(f"conv_{block}_filters", min_value=4, max_value=16, step=4),
        kernel_size=hp.Choice(f"conv_{block}_kernel_size", values=[3, 5]),
        activation=activation,
        padding="same",
    )(x)
    for index, min_value in ((2 * block - 1, 2), (2 * block, 1)):
        size = _pool(*sides, hp.Int(f"pool_{index}_size", min_value=min_value, max_value=4, step=1))
        x = layers.MaxPooling2D(pool_size=size)(x)
        sides = (sides[0] // size[0], sides[1] // size[1])
    x = layers.Dropout(rate=hp.Float(f"dropout_{block}_rate", min_value=0.0, max_value=0.9, step=0.1))(x)
    return x, sides


def _head(inputs: Any, x: Any, num_classes: int, name: str) -> Any:
    import keras
    from keras import layers

    outputs = layers.Dense(units=num_classes, activation="softmax")(layers.Flatten()(x))
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


def _stem(input_shape: tuple[int, int, int]) -> tuple[Any, Any]:
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape)
    return inputs, layers.RandomFlip("horizontal")(layers.Rescaling(1.0 / 255)(inputs))


def build_toonvision(hp: Any, input_shape: tuple[int, int, int] = (600, 200, 3), num_classes: int = 4) -> Any:
    """The article's CNN and search space (two Conv2D -> MaxPool -> MaxPool -> Dropout blocks), Adam(1e-3)."""
    import keras

    inputs, x = _stem(input_shape)
    sides = (input_shape[0], input_shape[1])
    for block in (1, 2):
        x, sides = _conv_block(hp, x, block, sides, "relu")
    model = _head(inputs, x, num_classes, "toonvision")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    return model


def _optimizer(name: str, learning_rate: float) -> Any:
    import keras

    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=learning_rate, momentum=0.9)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate=learning_rate)
    return keras.optimizers.Adam(learning_rate=learning_rate)


def build_toonvision_extended(hp: Any, input_shape: tuple[int, int, int] = (600, 200, 3), num_classes: int = 4) -> Any:
    """The article's space plus its "additional tunings": blocks, optimizer, learning rate, activation, batch size.

    Block 1 is always there; block 2's hyperparameters exist while `blocks` is
    2 or 3, block 3's while it is 3 (KerasTuner conditional scopes), so a
    trial never reads a hyperparameter of a block it does not build. Every
    default is the article's model: 2 blocks, relu, Adam(1e-3), batch size 32.
    """
    blocks = hp.Int("blocks", min_value=1, max_value=MAX_BLOCKS, default=2)
    activation = hp.Choice("activation", values=["relu", "elu", "gelu"])
    inputs, x = _stem(input_shape)
    sides = (input_shape[0], input_shape[1])
    for block in range(1, MAX_BLOCKS + 1):
        exists = list(range(block, MAX_BLOCKS + 1))
        with hp.conditional_scope("blocks", exists) if block > 1 else contextlib.nullcontext():
            if block <= blocks:
                x, sides = _conv_block(hp, x, block, sides, activation)
    model = _head(inputs, x, num_classes, "toonvision_extended")
    optimizer = _optimizer(
        hp.Choice("optimizer", values=["adam", "sgd", "rmsprop"]),
        hp.Float("learning_rate", min_value=1e-4, max_value=1e-2, sampling="log", default=1e-3),
    )
    hp.Choice("batch_size", values=[16, 32, 64], default=32)  # the worker's fit batches by it (trial_fit)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


BUILTIN: dict[str, Callable[..., Any]] = {"toonvision": build_toonvision, "toonvision_extended": build_toonvision_extended}


class _FunctionHypermodel(keras_tuner.HyperModel):
    """A `build(hp)` function as a HyperModel (KerasTuner wraps one the same way)."""

    def __init__(self, function: Callable[[Any], Any], name: str | None):
        super().__init__(name=name)
        self.function = function

    def build(self, hp: Any) -> Any:
        return self.function(hp)


class LoadedHypermodel(keras_tuner.HyperModel):
    """The search's hypermodel, whatever form the user gave it; calling it builds.

    Args:
        spec: the config's `hypermodel` (for messages).
        inner: the user's `keras_tuner.HyperModel` (a function is wrapped in one).
        input_shape: (height, width, 3) of the dataset's images.

    `build(hp)` raises `HypermodelError` when the result is not a compiled
    `keras.Model`, and builds a model that is not built yet (a `Sequential`
    without an `Input`, as KerasTuner's guides and the article write them)
    for the dataset's images: Keras's `BackupAndRestore` and `load_weights`
    need its weights. `fit` and `declare_hyperparameters` are `inner`'s.
    """

    def __init__(self, spec: str, inner: keras_tuner.HyperModel, input_shape: tuple[int, int, int]):
        super().__init__(name=getattr(inner, "name", None), tunable=getattr(inner, "tunable", True))
        self.spec = spec
        self.inner = inner
        self.input_shape = tuple(input_shape)

    @property
    def overrides_fit(self) -> bool:
        """Whether the user wrote their own `fit` (it then decides how the model is trained)."""
        return type(self.inner).fit is not keras_tuner.HyperModel.fit

    def declare_hyperparameters(self, hp: Any) -> None:
        self.inner.declare_hyperparameters(hp)

    def build(self, hp: Any) -> Any:
        import keras

        model = self.inner.build(hp)
        if not isinstance(model, keras.Model):
            raise HypermodelError(f"hypermodel {self.spec!r} returned {type(model).__name__}, not a keras.Model")
        if not model.compiled:
            if not self.overrides_fit:
                raise HypermodelError(f"hypermodel {self.spec!r} returned a model that is not compiled: call model.compile(...)")
            # Its own fit trains it (KerasTuner's custom-training-loop guide); Keras's callbacks, which
            # the worker's include, read `model.optimizer`, which only compile sets.
            model.optimizer = getattr(model, "optimizer", None)
        if not model.built:
            try:
                model.build((None, *self.input_shape))
            except Exception:  # a subclassed model with its own idea of build: let fit build it, as Keras would
                pass
        return model

    def fit(self, hp: Any, model: Any, *args: Any, **kwargs: Any) -> Any:
        return self.inner.fit(hp, model, *args, **kwargs)

    def __call__(self, hp: Any) -> Any:
        return self.build(hp)


def _import_target(spec: str) -> Any:
    if spec in BUILTIN:
        return BUILTIN[spec]
    if ":" not in spec:
        raise HypermodelError(
            f"hypermodel {spec!r} is neither built in ({', '.join(BUILTIN)}) nor 'package.module:name' or 'path/file.py:name'"
        )
    target, _, name = spec.rpartition(":")
    if hypermodel_file(spec) is not None:
        path = Path(os.path.expanduser(target)).absolute()  # a config file resolved it already (`load_config`)
        if not path.is_file():
            what = "a folder, not a file" if path.is_dir() else "not found"
            raise HypermodelError(
                f"hypermodel file {what}: {path} (from hypermodel {spec!r}; "
                "a relative path is resolved against the folder of the config file that names it)"
            )
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
    found = getattr(module, name, None)
    if found is None:
        raise HypermodelError(f"hypermodel {spec!r}: {target} has no function or class {name!r}")
    return found


def _dataset_arguments(callable_: Any, input_shape: tuple[int, int, int], num_classes: int) -> dict[str, Any]:
    parameters = inspect.signature(callable_).parameters
    return {k: v for k, v in (("input_shape", tuple(input_shape)), ("num_classes", num_classes)) if k in parameters}


def _instantiate(spec: str, cls: type, input_shape: tuple[int, int, int], num_classes: int) -> keras_tuner.HyperModel:
    """`cls(input_shape=..., num_classes=...)`, giving only what its constructor takes."""
    given = _dataset_arguments(cls, input_shape, num_classes)
    missing = [
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and name not in given
    ]
    if missing:
        raise HypermodelError(
            f"hypermodel {spec!r}: {cls.__name__}() needs {', '.join(missing)}, but only input_shape and num_classes "
            "can be given; give the others defaults, or name an instance of it instead"
        )
    try:
        return cls(**given)
    except Exception as exc:
        raise HypermodelError(f"hypermodel {spec!r}: {cls.__name__}({', '.join(given)}) raised {type(exc).__name__}: {exc}") from None


def load_hypermodel(spec: str, input_shape: tuple[int, int, int], num_classes: int) -> LoadedHypermodel:
    """The search's hypermodel from a built-in name, `package.module:name` or `path/file.py:name`.

    `name` may be a `build(hp)` function, a `keras_tuner.HyperModel` subclass
    (instantiated here) or an instance of one.

    Args:
        spec: the config's `hypermodel`.
        input_shape: (height, width, 3), given to a function or constructor that takes `input_shape`.
        num_classes: the number of classes, given to one that takes `num_classes`.

    Returns:
        A `LoadedHypermodel`: `hypermodel(hp)` (or `.build(hp)`) builds, `.fit` trains.

    Raises:
        HypermodelError: the spec names nothing importable, a class whose
            constructor needs other arguments, or something that is neither
            callable nor a HyperModel (here); `build` returns something that is
            not a compiled `keras.Model` (when called).
    """
    target = _import_target(spec)
    if isinstance(target, keras_tuner.HyperModel):
        inner = target
    elif inspect.isclass(target) and issubclass(target, keras_tuner.HyperModel):
        inner = _instantiate(spec, target, input_shape, num_classes)
    elif inspect.isclass(target) or not callable(target):
        what = f"class {target.__name__}" if inspect.isclass(target) else type(target).__name__
        raise HypermodelError(
            f"hypermodel {spec!r} is a {what}, not a build(hp) function, a keras_tuner.HyperModel subclass or an instance of one"
        )
    else:
        given = _dataset_arguments(target, input_shape, num_classes)
        inner = _FunctionHypermodel(functools.partial(target, **given) if given else target, getattr(target, "__name__", None))
    return LoadedHypermodel(spec, inner, input_shape)
