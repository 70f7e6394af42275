"""The ``label_noise`` stage: out-of-sample ``pred_probs`` and cleanlab's label issues.

The registered plugin is :mod:`.stage`; :mod:`.pred_probs` (K-fold, embeddings, file),
:mod:`.datalab`, :mod:`.options`, :mod:`.report` and the review loop :mod:`.review`.
"""
