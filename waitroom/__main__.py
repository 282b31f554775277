from waitroom.cli import main

raise SystemExit(main())
