"""``birnn serve``: a model (by default the champion) behind one URL.

:mod:`~birnn.serve.follow` (the served model and the thread that follows an alias),
:mod:`~birnn.serve.app` (the HTTP app: MLflow's scoring protocol, the page, ``/model``,
``/metrics``, the limits), :mod:`~birnn.serve.metrics` (Prometheus), ``page.html`` (the page,
no external assets), :mod:`~birnn.serve.cli` (the command) and :mod:`~birnn.serve.client`
(``birnn predict --server``).
"""
