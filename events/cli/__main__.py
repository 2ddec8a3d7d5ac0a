"""``python -m events.cli``: the platform's commands (``choreo`` adds the reference
system's demo, up, down, ps and replay: ``python -m services.tools.stack``)."""

import sys

from events.cli.main import main

sys.exit(main())
