"""jaxface: reproducible JAX/Flax training recipes."""
