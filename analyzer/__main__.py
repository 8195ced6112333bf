"""``python -m analyzer`` is the ``smtpflow`` command."""

import sys

from .cli import main

sys.exit(main())
