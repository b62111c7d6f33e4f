"""``python -m server`` runs the console script."""

from server.app.cli import main

raise SystemExit(main())
