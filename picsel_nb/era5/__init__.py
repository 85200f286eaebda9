"""ERA5 / ERA5-Land for the pipeline: CDS requests, reading downloads, daily products, synthetic data."""

from picsel_nb.era5.aggregation import IncompleteDayError, daily
from picsel_nb.era5.cds_request import (
    DATASETS,
    VARIABLES,
    Area,
    DatasetInfo,
    RequestError,
    build_request,
    dataset_info,
    latest_date,
    parse_area,
    parse_date,
    request_blocks,
    request_dates,
    request_hash,
    validate_request,
)
from picsel_nb.era5.reading import DownloadError, download_variables, open_download
from picsel_nb.era5.synthetic import netcdf_encoding, synthetic, synthetic_download

__all__ = [
    "DATASETS", "VARIABLES", "Area", "DatasetInfo", "DownloadError", "IncompleteDayError",
    "RequestError", "build_request", "daily", "dataset_info", "download_variables",
    "latest_date", "netcdf_encoding", "open_download",
    "parse_area", "parse_date", "request_blocks", "request_dates", "request_hash", "synthetic",
    "synthetic_download", "validate_request",
]
