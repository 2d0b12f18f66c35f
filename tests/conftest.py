import sys
from pathlib import Path

# test helpers (isa_harness, sst_runner) are plain modules next to the tests
sys.path.insert(0, str(Path(__file__).resolve().parent))
