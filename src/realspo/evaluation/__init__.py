"""Stage 6: judging a trained model against a baseline (`realspo evaluate`)."""
