"""``python -m qwengw``: the same as the ``qwengw`` command."""

from .cli import main

raise SystemExit(main())
