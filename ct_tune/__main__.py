"""Allow ``python -m ct_tune``."""

from ct_tune.cli import main

main()
