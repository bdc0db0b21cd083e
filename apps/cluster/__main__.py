"""`python -m apps.cluster`: one node of a cluster in this process (see `apps.cluster.host`)."""
import sys

from .host import main

sys.exit(main())
