import sys

from pyro_lvm.cli import main

sys.exit(main())
