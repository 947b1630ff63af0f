"""Allow ``python -m ct_tune``."""

from ct_tune.launch import main

main()
