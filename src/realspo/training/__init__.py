"""Stage 5: DPO-family training with optional SPO (`realspo train`, `realspo plot`)."""
