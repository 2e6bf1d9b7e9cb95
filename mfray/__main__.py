"""``python -m mfray VERB ...``: the CLI without an installed console script (e.g. in `ray job submit`)."""

import sys

from mfray.cli.main import main

sys.exit(main())
