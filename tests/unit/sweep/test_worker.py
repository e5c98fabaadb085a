"""A trial's objective: the saved model's validation score from history.csv."""

from __future__ import annotations

from pathlib import Path

from birnn.sweep.worker import objective_value


def test_objective_is_the_saved_models_validation_score(tmp_path: Path) -> None:
    history = tmp_path / "history.csv"
    history.write_text(
        "epoch,loss,accuracy,val_loss,val_accuracy\n"
        "1,0.9,0.7,0.30,0.91\n"
        "2,0.5,0.8,0.20,0.95\n"
        "3,0.4,0.9,0.25,0.94\n"
    )
    assert objective_value(history, "val_accuracy", best_restored=False) == 0.94
    # Early stopping restores the weights of the lowest val_loss: epoch 2.
    assert objective_value(history, "val_accuracy", best_restored=True) == 0.95
    assert objective_value(history, "val_loss", best_restored=False) == 0.25
