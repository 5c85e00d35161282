"""``python -m zaqar_otel.demo``."""

import sys

from zaqar_otel.demo.run import main

sys.exit(main())
