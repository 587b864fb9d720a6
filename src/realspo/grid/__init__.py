"""``realspo demo --grid``: the demo's arms over a grid of annotator confusion K and world coupling RHO."""
