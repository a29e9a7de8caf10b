"""acids-rave: RAVE, a realtime audio variational autoencoder (causal, streaming, exportable)."""

__version__ = "0.1.0"
