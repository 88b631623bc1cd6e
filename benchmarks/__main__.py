"""`python -m benchmarks NAME [options]`: the same as `hwr-bench`."""
import sys

from benchmarks.cli import main

sys.exit(main())
