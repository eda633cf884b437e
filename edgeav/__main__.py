from edgeav.cli import main

raise SystemExit(main())
