"""The parts of the book: each module turns its part's results into what its chapter
shows (a :class:`normlab.book.report.ChapterFacts`: every value, table and figure input),
and computes what a chapter shows of a trained model beyond its record as stored facts
(:mod:`normlab.book.facts`), with the function that :func:`normlab.book.reproduce` and the
chapters both call.

- :mod:`~normlab.book.parts.intro`: the landing page;
- :mod:`~normlab.book.parts.main`: the main models (each norm's chapter, the comparison,
  the activations; flip-averaged accuracy, activation statistics, batch statistics, the
  train/evaluation demonstrations);
- :mod:`~normlab.book.parts.batchsizes`: the batch-size sweep and the small-batch cost;
- :mod:`~normlab.book.parts.ablations`: the ablations (the order's pooled features and
  the crops' padding);
- :mod:`~normlab.book.parts.why`: learning-rate tolerance, budgets, smoothness, and
  :mod:`~normlab.book.parts.smallbatch`: the small-batch repairs (precise BN);
- :mod:`~normlab.book.parts.shift`: the distribution shifts;
- :mod:`~normlab.book.parts.timings`: where and how fast the runs ran, and the precision part;
- :mod:`~normlab.book.parts.answer`: what the answer quotes from the others.

:data:`FACTS` gives each part's ``facts(results, data)``: every stored fact its chapters read.
"""

from . import ablations, answer, batchsizes, intro, main, shift, smallbatch, timings, why

FACTS = {"main": main.facts, "ablations": ablations.facts, "smallbatch": smallbatch.facts}

__all__ = ["FACTS", "ablations", "answer", "batchsizes", "intro", "main", "shift", "smallbatch",
           "timings", "why"]
