"""realspo: data-efficient preference alignment (REAL pair selection + SPO training)."""

__version__ = "0.1.0"
