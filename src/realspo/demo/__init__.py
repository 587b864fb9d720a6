"""The whole pipeline in the proving ground, with statistics and a report (`realspo demo`)."""
