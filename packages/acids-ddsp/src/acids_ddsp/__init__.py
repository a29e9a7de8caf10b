"""acids-ddsp: DDSP timbre models (harmonic + filtered noise + reverb) driven by f0 and loudness."""

__version__ = "0.1.0"
