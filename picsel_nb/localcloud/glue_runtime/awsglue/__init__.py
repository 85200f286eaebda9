"""Hand-written stand-in for AWS Glue's ``awsglue`` library, which exists only inside Glue.

Only ``awsglue.utils.getResolvedOptions`` (and its ``GlueArgumentError``) is provided, with the
same argument parsing as Glue's own; the Spark parts (``GlueContext``, ``DynamicFrame``, ``Job``)
are not, so a Spark ETL script fails locally with an ImportError naming what is missing.
"""
