"""One job of the command line, below the search: ``pipeline`` (task data -> features -> teacher), ``teacher``
(fine-tuned and cached when none is given, ``teacher_identity`` its fingerprint), ``calibration_cache``
(the data-aware statistics on disk), ``compress`` (one ``ladasearch compress``) and ``final`` (the final
distillation of a chosen configuration, resumable).  They call ``train`` and ``compress``; the search calls them.
"""
