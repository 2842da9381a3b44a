"""Many processes: the multi-controller runtime, sharded initialisation, Orbax checkpoints.

A service layer above `nn/` and beside the sharding helpers; the public face is
`ecliptic.distributed`.
"""
