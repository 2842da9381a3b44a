"""ecliptic.nn: layers with PyTorch's semantics, acting on one unbatched example."""

__all__: list[str] = []
