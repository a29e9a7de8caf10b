"""acids-export: TorchScript for nn~, ONNX board profiles, verified artifacts."""

__version__ = "0.1.0"
