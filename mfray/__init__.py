"""mfray: multi-fidelity transfer learning on molecules with graph neural networks, on Ray.

Importing :mod:`mfray` never imports Ray: only :mod:`mfray.run` (and the CLI that calls it) does.
"""

__version__ = "0.1.0"
