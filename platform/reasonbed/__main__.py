"""`python -m reasonbed ...`: see reasonbed.cli."""

from reasonbed.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
