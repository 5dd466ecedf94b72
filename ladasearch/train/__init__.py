"""The LadaBERT loop and what it trains with: ``ladabert`` (compress a step, distil, score: one round after
another, with hooks), ``distill`` (the losses), ``schedule`` (warm-up + decay), ``evaluate``, ``features``
(tokenized batches) and ``teacher_outputs`` (the teacher's cached forward passes).  Below: ``compress``, ``nn``.
"""
