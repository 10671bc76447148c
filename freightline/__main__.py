"""``python -m freightline`` is the ``freightline`` command."""

from freightline.cli import main

main()
