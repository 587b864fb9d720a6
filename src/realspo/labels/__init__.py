"""Stage 4: labels for selected pairs (judges, annotation round trip, simulated annotator; `realspo label`)."""
