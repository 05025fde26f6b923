"""
C{python -m multiport.ctl}: the C{multiport-ctl} command.
"""

from multiport.ctl.main import main

raise SystemExit(main())
