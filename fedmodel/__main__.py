from fedmodel.cli import main

raise SystemExit(main())
