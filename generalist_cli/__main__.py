"""``python -m generalist_cli`` is the same as ``gen``."""

from generalist_cli.cli import main

if __name__ == "__main__":
    main()
