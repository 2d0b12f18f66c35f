import sys

from vmcore.cli import main

sys.exit(main())
