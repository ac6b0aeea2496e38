import sys

from mnistlab.cli import console

sys.exit(console())
