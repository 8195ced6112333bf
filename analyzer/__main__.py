"""``python -m analyzer`` is the ``smtpflow`` command."""

from .cli import run

run()
