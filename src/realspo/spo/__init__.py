"""SPO: key phrases (RAKE), degree variants and the degree head (`realspo spo-preview`)."""
