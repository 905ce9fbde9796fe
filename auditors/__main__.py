import sys

from auditors.cli import main

sys.exit(main())
