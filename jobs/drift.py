"""Ray job: one monitoring check (`distillery drift`), e.g. from a scheduler every hour.

    ray job submit --working-dir . -- \
        python jobs/drift.py --config jobs/configs/mnist1d.yaml --window 1h

Reads the request log in the store, writes monitor/reports/<window>/ and sends the alerts that
fire to the spec's sinks.
"""

import sys
from pathlib import Path

# A submitted working dir is a plain clone: put the library on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from distillery.cli import main  # noqa: E402

sys.exit(main(["drift", *sys.argv[1:]]))
