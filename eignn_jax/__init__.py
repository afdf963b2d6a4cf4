"""eignn_jax: EIGNN for predicting glassy dynamics from structure, in pure JAX."""

__version__ = "0.1.0"

# First, so that it records the package's sources as imported (names of traced programs).
from eignn_jax import compilation as _compilation  # noqa: E402,F401
