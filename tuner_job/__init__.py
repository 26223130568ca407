"""The program every chief, worker and local process runs: `python -m tuner_job`.

Importing the package is cheap (no TensorFlow); the modules that train import
it themselves.
"""

__version__ = "0.1.0"
