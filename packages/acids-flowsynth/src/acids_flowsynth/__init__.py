"""acids-flowsynth: synthesizer parameter inference from audio (VAE + normalizing flows, FlowSynth)."""

__version__ = "0.1.0"
