"""``python -m pyproxy`` runs the command line."""

from pyproxy.cli import main

raise SystemExit(main())
