import sys

try:
    from .cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules load
    print("interrupted; no partial output was written", file=sys.stderr)
    sys.exit(130)

sys.exit(main())
