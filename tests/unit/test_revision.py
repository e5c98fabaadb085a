"""What a committed revision names: the model md5 in dvc.lock, params read without removed keys."""

from __future__ import annotations

import pytest

from birnn.config import params_from_dict
from birnn.errors import ConfigError
from birnn.revision import lock_model_md5


def test_the_model_md5_comes_from_trains_output_in_dvc_lock() -> None:
    lock = """schema: '2.0'
stages:
  train:
    outs:
    - path: models/model.keras
      hash: md5
      md5: e308a1c48f32af49666ff0cf45fa1420
  evaluate:
    deps:
    - path: models/model.keras
      md5: 00000000000000000000000000000000
"""
    assert lock_model_md5(lock) == "e308a1c48f32af49666ff0cf45fa1420"
    assert lock_model_md5("schema: '2.0'\nstages: {}\n") is None


def test_an_older_revisions_removed_keys_are_left_out() -> None:
    from birnn.revision import without_removed_keys

    raw = {"registry": {"promote": "auto", "metric": "macro_f1"}, "data": {"dataset": "mnist"}}
    params = params_from_dict(without_removed_keys(raw))
    assert params.registry.metric == "macro_f1"
    assert raw["registry"]["promote"] == "auto"  # the caller's mapping is left as it was
    with pytest.raises(ConfigError, match=r"registry\.promote was removed"):
        params_from_dict(raw)  # a working tree's params.yaml still says so
