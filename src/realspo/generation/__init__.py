"""Stage 1: candidate responses from a model (`realspo generate`)."""
