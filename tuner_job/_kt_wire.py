"""KerasTuner's wire protocol (generated protobuf and gRPC modules) without TensorFlow.

`import keras_tuner` imports TensorFlow (seconds of start-up, hundreds of MB):
too heavy for a process that only speaks the protocol, such as the benchmark's
simulated workers (`bench/sim_workers.py`). This module loads KerasTuner's own
generated files, `keras_tuner/src/protos/v4/{keras_tuner_pb2, service_pb2,
service_pb2_grpc}.py`, by file path, so the messages and stubs are byte for
byte the ones a stock worker and our chief use.

The generated files import each other as `keras_tuner.src.protos.v4.*`, so
`load()` puts empty stand-in packages for `keras_tuner`, `keras_tuner.src`,
`keras_tuner.src.protos` and `keras_tuner.src.protos.v4` into `sys.modules`.

Use it ONLY in a process that never imports keras_tuner for real:

- after `load()`, `import keras_tuner` returns the empty stand-in, not the
  library; and
- protobuf's default descriptor pool rejects a second registration of the
  same `.proto` file, so loading the real modules after these (or these after
  the real ones, by path) fails.

If keras_tuner was already imported for real, `load()` returns its protos
instead of loading anything. The rest of `tuner_job` uses `tuner_job._kt`.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

__all__ = ["load", "protos_dir"]

_PACKAGES = ("keras_tuner", "keras_tuner.src", "keras_tuner.src.protos", "keras_tuner.src.protos.v4")
_MODULES = ("keras_tuner_pb2", "service_pb2", "service_pb2_grpc")
_STUB_MARK = "__tuner_job_wire_stub__"


def protos_dir() -> Path:
    """`keras_tuner/src/protos/v4` of the installed KerasTuner, found without importing it."""
    spec = importlib.util.find_spec("keras_tuner") if "keras_tuner" not in sys.modules else sys.modules["keras_tuner"].__spec__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("keras_tuner is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "src" / "protos" / "v4"
    if not (folder / "service_pb2.py").is_file():
        raise ImportError(f"KerasTuner's generated protobuf modules are not in {folder}")
    return folder


def load() -> types.SimpleNamespace:
    """`keras_tuner_pb2`, `service_pb2` (messages) and `service_pb2_grpc` (stubs)."""
    real = sys.modules.get("keras_tuner")
    if real is not None and not getattr(real, _STUB_MARK, False):
        from keras_tuner.src import protos  # the real library is loaded already

        return types.SimpleNamespace(keras_tuner_pb2=protos.get_proto(), service_pb2=protos.get_service(), service_pb2_grpc=protos.get_service_grpc())
    folder = protos_dir()
    for name in _PACKAGES:
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = []  # a package, with nothing importable by search
            setattr(package, _STUB_MARK, True)
            sys.modules[name] = package
    loaded = {}
    for name in _MODULES:
        full = f"keras_tuner.src.protos.v4.{name}"
        module = sys.modules.get(full)
        if module is None:
            spec = importlib.util.spec_from_file_location(full, folder / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[full] = module
            try:
                spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[full]
                raise
            setattr(sys.modules["keras_tuner.src.protos.v4"], name, module)
        loaded[name] = module
    return types.SimpleNamespace(**loaded)
