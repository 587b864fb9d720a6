"""``python -m realspo``: the same command line as ``realspo`` (:func:`realspo.cli.main`)."""

from realspo.cli import main

raise SystemExit(main())
