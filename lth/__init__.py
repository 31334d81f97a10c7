"""lth: lottery-ticket experiments (iterative magnitude pruning with rewinding, and its controls)."""
