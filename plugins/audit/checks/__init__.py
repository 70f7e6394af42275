"""The built-in audit checks, each registered exactly like a third-party check.

A check is one unit (:class:`vetset.core.Check`): its module holds the options model,
the per-image ``compute``, the ``evaluate`` on the driver, its saved views, its report
section and its recommended-action rules, and registers them with one
``register(Check(...))``. ``balance``, ``duplicates`` and ``unreadable`` are one check
each; ``coverage`` holds the three coverage properties (``orientation``, ``colour``,
``clarity``) and their shared section, ``quality`` the ``exposure`` and ``size`` checks
and the image-quality section. Adding a check is adding one module (and listing it in
``vetset.core.manager.BUILTIN_PLUGINS``, or publishing it through the ``vetset`` entry
point).
"""
