"""fedmodel: federated and privacy-preserving training for TensorFlow/Keras.

Importing this package does not import TensorFlow; the subpackages that train do so lazily.
"""

from __future__ import annotations

__version__ = "0.1.0"
