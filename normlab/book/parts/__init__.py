"""The parts of the book whose chapters show more of a trained model than its record: each
module computes those facts (:mod:`normlab.book.facts`), stored once, with the function
that :func:`normlab.book.reproduce` and the chapters both call.

- :mod:`~normlab.book.parts.main`: the main models (flip-averaged accuracy, activation
  statistics, batch statistics, the train/evaluation demonstrations);
- :mod:`~normlab.book.parts.ablations`: the order's pooled features and the crops' padding;
- :mod:`~normlab.book.parts.smallbatch`: precise batch norm after small-batch training.

:data:`FACTS` gives each part's ``facts(results, data)``: every fact its chapters read.
"""

from . import ablations, main, smallbatch

FACTS = {"main": main.facts, "ablations": ablations.facts, "smallbatch": smallbatch.facts}

__all__ = ["FACTS", "ablations", "main", "smallbatch"]
