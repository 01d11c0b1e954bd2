"""Edge inference runtime: the device side.

``import edge`` must stay light: no TensorFlow, no interpreter, no MQTT at import time.
"""

__version__ = "0.1.0"
