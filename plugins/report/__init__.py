"""The ``report`` stage: ``report.html``, ``report.md`` and the shared sections.

The registered plugin is :mod:`.stage`; :mod:`.page` assembles the sections,
:mod:`.overview`, :mod:`.actions` and :mod:`.markdown` are its own.
"""
