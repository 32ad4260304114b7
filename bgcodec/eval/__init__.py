"""Measuring bgcodec against the classic codecs (``bgcodec eval``); the codec core never imports it.

- ``run``: the evaluation (every image × codec × setting, real files), its means and BD deltas.
- ``report``: what a run writes: summary.md, one CSV per codec, results.json.
- ``plots``: rate–distortion plots (also for ``bgcodec bound``).
- ``codecs``: the classic codecs behind one interface.
- ``bdrate``: Bjøntegaard deltas.
- ``metrics``: PSNR and MS-SSIM.
- ``system``: what the machine and its libraries are.
"""
