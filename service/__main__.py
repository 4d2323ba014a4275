"""`python -m deltamem.service` runs the server."""

import sys

from deltamem.service.cli import main

sys.exit(main())
