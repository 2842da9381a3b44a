"""Sharding: the rules that give each parameter a `PartitionSpec` (`_rules`) and the
helpers that place models, optimizer states and batches on a mesh (`_placement`).

A service layer above `nn/`, beside `_distributed/`; the public face is `ecliptic.sharding`.
"""
