import sys

from caller_engine.cli import main

sys.exit(main())
