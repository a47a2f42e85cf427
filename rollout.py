"""rollout.py: not built yet (see the issues). Part of the MOSAIC reference implementation."""
import sys

if __name__ == "__main__":
    sys.exit("rollout.py is not built yet")
