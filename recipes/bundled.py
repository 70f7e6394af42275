"""Built-in plugin: registers the recipes bundled in ``vetset.recipes`` (``*.yaml``)."""

from __future__ import annotations

from importlib import resources

from vetset.core.hookspecs import hookimpl


@hookimpl
def vetset_register_recipes(register):
    for entry in sorted(resources.files("vetset.recipes").iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".yaml"):
            register(entry.name[: -len(".yaml")], str(entry))
