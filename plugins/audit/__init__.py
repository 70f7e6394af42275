"""The ``audit`` stage: one decode of every image, then every registered check.

The registered plugin is :mod:`.stage`; each built-in check is one module of
:mod:`.checks`; :mod:`.context` is what a check's ``evaluate`` receives. Modules whose
name starts with ``_`` are helpers of this package only.
"""
