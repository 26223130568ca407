"""Benchmarks: `python -m bench` (or `make bench`) prints a table and writes bench/results.json.

- `bench.capacity`: the oracle's capacity, stock KerasTuner chief vs ours, with
  simulated workers (`bench.sim_workers`, no TensorFlow) against chiefs started
  by `bench.chiefs`.
- `bench.overhead`: a worker's time outside `fit` in the demo search.
- `bench.input_pipeline`: images/s from the dataset cache vs decoding the folder,
  the pipeline before issue 17, numpy, and (`bench.input_fit`, read by `fit`) a
  `keras.utils.PyDataset`.

Every figure is measured against its baseline in the same run.
"""
