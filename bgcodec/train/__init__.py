"""Training BG-VAE and its bound model (``bgcodec train``).

- ``options``: TrainOptions, the one description of a run (the command line is derived from it).
- ``loop``: the objective and the loop (setup, step, log, validate, save).
- ``checkpoints``: ``--init``, ``--resume`` and the exported weights.
- ``data``: training images as random crops.
- ``guidance``: the bound model as teacher (feature affinities, reconstruction).
- ``widening``: growing trained weights into a wider config.
- ``curves``: mean rate–distortion curves on a few images (validation, ``bgcodec bound``).

Importing this package imports nothing else; the modules import torch as they need it.
"""
