"""`python -m pointsman.learning train|eval|calibrate|bundle ...`"""

from pointsman.learning.commands import main

raise SystemExit(main())
