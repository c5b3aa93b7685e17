"""Ray job: `distillery monitor charts` (control charts of a window of the request log, no drift
report, no alerts sent), e.g. from a scheduler.

    ray job submit --working-dir . -- \
        python jobs/monitor_charts.py --config jobs/configs/mnist1d.yaml --window 6h

Reads the request log in the store and writes monitor/reports/<window>/ (control-*.png,
check.json); prints what it wrote.
"""

import sys
from pathlib import Path

# A submitted working dir is a plain clone: put the library on the path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from distillery.cli import main  # noqa: E402

sys.exit(main(["monitor", "charts", *sys.argv[1:]]))
