"""``python -m freightline`` is the ``freightline`` command."""

from freightline.app.cli import main

main()
