"""``python -m nginxgen`` = the ``nginxgen`` console script."""

import sys

from .cli import main

sys.exit(main())
