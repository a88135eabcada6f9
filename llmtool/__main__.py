"""``python -m llmtool``."""

import sys

from llmtool.cli import main

sys.exit(main())
