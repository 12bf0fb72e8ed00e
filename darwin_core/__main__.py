from darwin_core.cli import main

raise SystemExit(main())
