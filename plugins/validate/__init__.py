"""The ``validate`` stage: predictions on held-out data, metrics, the train/val gap.

The registered plugin is :mod:`.stage`; :mod:`.metrics` and :mod:`.report` are its parts.
"""
