"""Ray job: `distillery tune` on the cluster.

    ray job submit --working-dir . -- \
        python jobs/tune.py --config jobs/configs/mnist1d.yaml --space tune/mnist1d_response.yaml
"""

import sys
from pathlib import Path

# A submitted working dir is a plain clone: put the library on the path; the CLI then ships it
# to the cluster's workers (runtime_env py_modules).
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from distillery.cli import main  # noqa: E402

sys.exit(main(["tune", *sys.argv[1:]]))
