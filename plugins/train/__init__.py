"""The ``train`` stage and the timm trainer.

The registered plugin is :mod:`.stage`; :mod:`.options`, :mod:`.model`, :mod:`.data`,
:mod:`.loop`, :mod:`.inference`, :mod:`.checkpoint`, :mod:`.distributed` and the torchrun
launcher :mod:`.ddp` are its parts.
"""
