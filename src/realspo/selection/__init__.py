"""Stage 3: which pairs annotators label (strategy registry, pair rows; `realspo select`)."""
