"""acids-data: audio → chunks + features → sharded, memory-mapped dataset; readers for training."""

__version__ = "0.1.0"
