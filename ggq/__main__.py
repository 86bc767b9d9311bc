from ggq.cli import main

raise SystemExit(main())
