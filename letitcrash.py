"""`python -m letitcrash`: the `letitcrash` command (see `apps.cli`), for an environment
whose scripts directory is not on PATH.

The distribution installs five packages (`actors`, `supervision`, `storage`, `sim`,
`apps`) and this one module, which only names the command: import the packages for the
library.
"""
import sys

if __name__ == "__main__":
    from apps.cli import main

    sys.exit(main())
