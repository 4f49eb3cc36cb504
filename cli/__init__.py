"""The ``segments`` command line (:mod:`cli.app`)."""

import sys

# Bytecode is cached in the project's environment at first import even where PYTHONDONTWRITEBYTECODE is
# set: without the cache every command compiles pandas, SQLAlchemy and scikit-learn again.
sys.dont_write_bytecode = False
