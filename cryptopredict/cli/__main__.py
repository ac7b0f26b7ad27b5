"""`python -m cryptopredict.cli`: the `cryptopredict` command, for child processes of the same interpreter."""

import sys

from cryptopredict.cli import main

sys.exit(main())
