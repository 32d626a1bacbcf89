"""One Lifeboat database copy (target a -> b of a bench stack), as its own process so the benchmark can
measure it: ``python bench/lbdb.py STACK``. Prints the copier's report as JSON."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    from toolkit.config import stackfile
    from toolkit.run.engine import Engine
    from toolkit.stores.copier import copy_database

    engine = Engine(stackfile.load(Path(sys.argv[1])))
    report = copy_database(engine.provider("a").database(), engine.provider("b").database())
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
