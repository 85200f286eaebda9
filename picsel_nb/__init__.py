"""picsel-nb: a serverless ERA5 weather-data pipeline on AWS, built step by step in notebooks."""

__version__ = "0.1.0"
