"""jaxsr: real-world image super-resolution and restoration in JAX/Flax."""

__version__ = "0.1.0"
