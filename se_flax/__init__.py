"""se_flax: Squeeze-and-Excitation networks in JAX and Flax.

Importing se_flax changes nothing in the process; a program that runs it calls
`se_flax.runtime.setup()` once at start (main.py does).
"""
