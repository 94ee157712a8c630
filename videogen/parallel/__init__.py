"""Parallelism applied to models from outside them (house rule 10): sequence parallelism, its strategy."""
