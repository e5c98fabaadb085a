"""``birnn sweep``: an Optuna study over ``params.yaml``, every trial a DVC experiment and a
child MLflow run, run by any number of workers on this machine and others.

- :mod:`birnn.sweep.space`: ``sweep.yaml``'s schema and search space, trial values as ``-S``.
- :mod:`birnn.sweep.storage`: the study's Optuna storage and the workers' heartbeats.
- :mod:`birnn.sweep.worker`: a worker's checkout and its trials (``dvc exp run``).
- :mod:`birnn.sweep.tracking`: the sweep's parent MLflow run.
- :mod:`birnn.sweep.cli`: the command, which starts the workers (``python -m birnn.sweep``).

Nothing is imported here: the stages never import the sweep, and the sweep's modules load only
what their step needs.
"""
