"""vetset's FiftyOne App plugin (``@vetset/vetset``): operators and the audit panel.

This folder is a FiftyOne plugin directory (``fiftyone.yml`` + this ``register(p)``) and
also the Python package ``vetset.plugins.fiftyone_app``. Make it visible to the App with
``recipes app install`` (links it into ``fo.config.plugins_dir``) or launch the App with
``recipes app --dataset NAME``, which does so for that session.

The classes are thin: forms are built from what vetset's pluggy plugins registered, and
the work is done by :mod:`vetset.plugins.fiftyone_app.api`.
"""

from __future__ import annotations


def register(p):
    """Register every operator and panel listed in ``fiftyone.yml`` (FiftyOne plugin entry point)."""
    from vetset.plugins.fiftyone_app.augment_op import Augment
    from vetset.plugins.fiftyone_app.navigation import OpenAuditPanel, OpenSavedView
    from vetset.plugins.fiftyone_app.operators import FindLabelIssues, RunAudit, RunRecipe, TrainAndValidate
    from vetset.plugins.fiftyone_app.panel import AuditPanel

    for cls in (RunAudit, FindLabelIssues, Augment, TrainAndValidate, RunRecipe, OpenSavedView, OpenAuditPanel,
                AuditPanel):
        p.register(cls)
