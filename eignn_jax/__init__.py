"""eignn_jax: EIGNN for predicting glassy dynamics from structure, in pure JAX."""

__version__ = "0.1.0"
