"""The three training phases of a PruMUX point, each built of resumable stages (see `loop`).

- `retrieval`: phase 1, token-retrieval warm-up of the multiplexed model (N > 1 only).
- `multiplexed`: phase 2, optional MLM continuation, then task fine-tuning with width N.
- `pruning`: phase 3, CoFi pruning with distillation, materialising, pruned fine-tuning.
"""
