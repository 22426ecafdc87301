"""``python -m reconciler`` is ``armctl``."""

from reconciler.cli.main import run

if __name__ == "__main__":
    run()
