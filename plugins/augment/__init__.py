"""The ``augment`` stage: plan new train images for the audit's gaps and write them.

The registered plugin is :mod:`.stage`; :mod:`.plan` (how many), :mod:`.policies` and
:mod:`.pipeline` (what), :mod:`.writer` and :mod:`.store` (where) are its parts;
:mod:`.steps` is the whole run, step by step, shared with ``recipes plan``.
"""
