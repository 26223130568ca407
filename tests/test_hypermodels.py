"""The built-in ToonVision hypermodel is the seed's space, and every point of it builds."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

keras_tuner = pytest.importorskip("keras_tuner")

from tuner_job.errors import HypermodelError  # noqa: E402
from tuner_job.hypermodels import build_toonvision, load_hypermodel  # noqa: E402


def _space() -> dict:
    hp = keras_tuner.HyperParameters()
    build_toonvision(hp, (64, 32, 3), 4)
    return {p.name: p.get_config() for p in hp.space}


def test_space_is_the_seeds() -> None:
    space = _space()
    for block in (1, 2):
        filters = space[f"conv_{block}_filters"]
        assert (filters["min_value"], filters["max_value"], filters["step"]) == (4, 16, 4)
        assert space[f"conv_{block}_kernel_size"]["values"] == [3, 5]
        assert (space[f"dropout_{block}_rate"]["min_value"], space[f"dropout_{block}_rate"]["max_value"]) == (0.0, 0.9)
        assert space[f"dropout_{block}_rate"]["step"] == pytest.approx(0.1)
    assert [(space[f"pool_{i}_size"]["min_value"], space[f"pool_{i}_size"]["max_value"]) for i in (1, 2, 3, 4)] == [(2, 4), (1, 4), (2, 4), (1, 4)]
    assert len(space) == 10


@pytest.mark.parametrize("input_shape", [(600, 200, 3), (24, 16, 3), (8, 8, 3)])
def test_every_corner_of_the_space_builds_and_runs(input_shape: tuple) -> None:
    """Largest pools and kernels, smallest ones, at the seed's size and tiny sizes."""
    import numpy as np

    corners = itertools.product([2, 4], [1, 4], [2, 4], [1, 4], [3, 5], [4, 16])
    batch = np.zeros((1, *input_shape), dtype="uint8")
    for p1, p2, p3, p4, kernel, filters in corners:
        hp = keras_tuner.HyperParameters()
        hp.values.update(
            pool_1_size=p1, pool_2_size=p2, pool_3_size=p3, pool_4_size=p4,
            conv_1_kernel_size=kernel, conv_2_kernel_size=kernel, conv_1_filters=filters, conv_2_filters=filters,
            dropout_1_rate=0.9, dropout_2_rate=0.0,
        )
        model = build_toonvision(hp, input_shape, 4)
        assert model.predict(batch, verbose=0).shape == (1, 4), (p1, p2, p3, p4, kernel, filters)
        for layer in model.layers:
            shape = getattr(layer, "output", None)
            if shape is not None and len(shape.shape) == 4:
                assert min(shape.shape[1:3]) >= 1, (layer.name, shape.shape)


def test_user_hypermodel_from_file_gets_shape_and_classes(tmp_path: Path) -> None:
    file = tmp_path / "mine.py"
    file.write_text(
        "import keras\n"
        "def build(hp, input_shape, num_classes):\n"
        "    m = keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),\n"
        "                          keras.layers.Dense(hp.Int('units', 2, 8), activation='relu'),\n"
        "                          keras.layers.Dense(num_classes, activation='softmax')])\n"
        "    m.compile('adam', 'sparse_categorical_crossentropy', metrics=['accuracy'])\n"
        "    return m\n"
    )
    build = load_hypermodel(f"{file}:build", (8, 8, 3), 3)
    model = build(keras_tuner.HyperParameters())
    assert model.output_shape == (None, 3)


@pytest.mark.parametrize(
    ("source", "spec", "expected"),
    [
        (None, "/nope/missing.py:build", "hypermodel file not found"),
        ("def build(hp):\n    return 42\n", "{file}:build", "returned int, not a keras.Model"),
        ("x = 1\n", "{file}:build", "has no function or class 'build'"),
        ("raise RuntimeError('boom')\n", "{file}:build", "failed to import: RuntimeError: boom"),
        (None, "no_such_module:build", "cannot be imported"),
        (None, "resnet9000", "neither built in"),
    ],
)
def test_bad_hypermodels(tmp_path: Path, source: str | None, spec: str, expected: str) -> None:
    file = tmp_path / "hm.py"
    if source is not None:
        file.write_text(source)
    with pytest.raises(HypermodelError, match=expected):
        load_hypermodel(spec.format(file=file), (8, 8, 3), 4)(keras_tuner.HyperParameters())
