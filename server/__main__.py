"""``python -m server`` runs the console script."""

from server.cli import main

raise SystemExit(main())
