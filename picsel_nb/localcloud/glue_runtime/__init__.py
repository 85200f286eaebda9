"""Path root put first on a local Glue job's PYTHONPATH so that ``import awsglue`` finds the shim.

The ``awsglue`` library exists only inside AWS Glue; this directory holds a hand-written stand-in
for the one part a Python shell job needs (``awsglue.utils.getResolvedOptions``).
"""
