"""The ``audit`` stage: one decode of every image, then every registered check.

The registered plugin is :mod:`.stage` (the options, the image pass, the driver); the
built-in checks are modules of :mod:`.checks`, each with its own options, views, report
section and actions; :mod:`.context` is what a check's ``evaluate`` receives. Modules
whose name starts with ``_`` are helpers of this package only.
"""
