"""``python -m pyro_prune``: the same as the ``pyro-prune`` command."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
