"""The ``iterate`` stage: retrain aimed at the failing slices and compare round against round.

The registered plugin is :mod:`.stage`; :mod:`.compare` (paired bootstrap, verdict) and
:mod:`.report` (the report section) are its parts.
"""
