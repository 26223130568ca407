"""The launcher: `tunectl`. Never imports TensorFlow or Keras, so it answers fast."""

__version__ = "0.1.0"
