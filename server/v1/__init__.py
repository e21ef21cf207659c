"""Generated from protos/lmrec/v1 by `python -m lmrec.server.codegen`. DO NOT EDIT."""

GRPCIO_TOOLS_VERSION = "1.85.1"
