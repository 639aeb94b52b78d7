"""What the small-batch repairs show beyond their records, as a stored fact
(:func:`normlab.book.facts.stored`): batch norm's test accuracy with its running
statistics re-estimated on the training images after training ("precise BN")."""

from __future__ import annotations

from collections.abc import Sequence

from ...data import CIFAR10
from ...train import Pipeline, predict
from ..facts import stored
from ..probes import reestimate_batch_statistics
from ..runs import Result


def precise_accuracy(result: Result, data: CIFAR10) -> float:
    """Test accuracy (fraction) of ``result``'s batch-norm model after its running
    statistics are re-estimated on all training images of ``data``
    (:func:`normlab.book.probes.reestimate_batch_statistics`, Wu & Johnson 2021)."""
    def compute():
        pipeline = Pipeline.for_config(result.config, data)
        model = reestimate_batch_statistics(result.model(), data.train_images, pipeline)
        correct = predict(model, data.test_images, pipeline).argmax(dim=1) == data.test_labels
        return correct.float().mean().item()
    return stored("precise-accuracy", compute, [result], data)


def facts(results: Sequence[Result], data: CIFAR10) -> None:
    """Compute and store the precise-BN accuracy of every batch-norm model among
    ``results`` (the small-batch part, trained on ``data``)."""
    for r in results:
        if r.config.norm == "batch":
            precise_accuracy(r, data)
