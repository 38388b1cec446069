"""`python -m avmae.cli ...` (and torchrun -m avmae.cli ...): the same as the `avmae` command."""

import sys

from avmae.cli import main

sys.exit(main())
