"""acids-deploy: bundles of exported models for Pi and Jetson boards, pushed over SSH.

Importing this package (or running ``acids-deploy --help``) never imports torch, numpy or onnx.
"""

__version__ = "0.1.0"
