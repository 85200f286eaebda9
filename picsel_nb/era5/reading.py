"""Open whatever the CDS sent back (NetCDF4, NetCDF3, GRIB, or a zip of them) as one tidy dataset.

The container is recognised from its first bytes, never from the file name: the CDS often zips a
file the caller named ``.nc``. The result always has dims (valid_time, latitude N→S, longitude in
-180..180 ascending), is loaded in memory and leaves no temporary file behind.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from functools import reduce
from pathlib import Path

import xarray as xr

MAGIC = {
    b"CDF\x01": "NetCDF3 (classic)",
    b"CDF\x02": "NetCDF3 (64-bit offset)",
    b"\x89HDF": "NetCDF4/HDF5",
    b"GRIB": "GRIB",
    b"PK\x03\x04": "ZIP",
    b"PK\x05\x06": "ZIP",  # an empty archive: only the end record
}
ACCEPTED = ("NetCDF3 (CDF\\x01, CDF\\x02), NetCDF4/HDF5 (\\x89HDF), GRIB, "
            "or a ZIP (PK\\x03\\x04) holding NetCDF or GRIB files")


class DownloadError(ValueError):
    """A download that is not a readable ERA5 file: corrupt, truncated or of another format."""


def open_download(source: str | os.PathLike | bytes | bytearray | memoryview) -> xr.Dataset:
    """The ERA5 data in a CDS download (a path or the bytes), loaded and normalised.

    Raises DownloadError saying what was found and what is accepted when it cannot be read.
    """
    data = Path(source).read_bytes() if isinstance(source, str | os.PathLike) else bytes(source)
    parts = _open_any(data, "download")
    try:
        merged = xr.merge(parts, join="outer", compat="no_conflicts",
                          combine_attrs="drop_conflicts")
    except xr.MergeError as exc:
        raise DownloadError(f"download holds {len(parts)} files that do not merge ({exc}); "
                            "accepted: files of one request, e.g. its instant and accum parts"
                            ) from exc
    return _normalise(merged)


def download_variables(path: str | os.PathLike) -> set[str]:
    """The data variables a downloaded file holds, checked without loading the file in memory.

    For the ingest function, which must refuse a corrupt download before storing it but never
    hold a whole file: zip members are unpacked to disk beside the file, each part is opened
    lazily and the last value of every variable is read (a truncated file fails there). NetCDF3,
    the retired CDS's format, is the exception: read past its end it gives fill values instead of
    an error, so it is loaded whole to be checked (its files are small: int16, regional).
    Raises DownloadError like ``open_download``.
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(8)
    kind = container(head)
    if kind is None:
        found = "it is empty" if not head else f"it starts with {head!r}"
        raise DownloadError(f"download is not an ERA5 file: {found}; accepted: {ACCEPTED}")
    if kind != "ZIP":
        return _lazy_variables(path, kind, "download")
    with tempfile.TemporaryDirectory(dir=path.parent, prefix="picsel-unzip-") as tmp:
        try:
            with zipfile.ZipFile(path) as archive:
                members = [info for info in archive.infolist() if not info.is_dir()]
                if not members:
                    raise DownloadError(f"download is an empty ZIP; accepted: {ACCEPTED}")
                names = set()
                for number, info in enumerate(members):
                    target = Path(tmp) / f"member-{number}"
                    with archive.open(info) as source, target.open("wb") as sink:
                        shutil.copyfileobj(source, sink)  # streamed: CRC checked at the end
                    with target.open("rb") as member:
                        member_kind = container(member.read(8))
                    label = f"ZIP member {info.filename!r} of download"
                    if member_kind in (None, "ZIP"):
                        raise DownloadError(f"download is a ZIP whose member {info.filename!r} "
                                            f"is not NetCDF or GRIB; accepted: {ACCEPTED}")
                    names |= _lazy_variables(target, member_kind, label)
                return names
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
            raise DownloadError(f"download is a truncated or corrupt ZIP ({exc}); "
                                f"accepted: {ACCEPTED}") from exc


def _lazy_variables(path: Path, kind: str, label: str) -> set[str]:
    """The data variables of one NetCDF or GRIB file, opened lazily; its last values are read."""
    try:
        if kind == "GRIB":
            import cfgrib  # imported here: eccodes is slow to load and rarely needed

            parts = cfgrib.open_datasets(path, backend_kwargs={"indexpath": ""})
        elif kind.startswith("NetCDF3"):
            parts = [_open_netcdf(path.read_bytes())]
        else:
            parts = [xr.open_dataset(path, engine="netcdf4")]
        try:
            for part in parts:
                for variable in part.data_vars.values():
                    variable[(-1,) * variable.ndim].values  # noqa: B018 - reads the last chunk
            return {name for part in parts for name in part.data_vars}
        finally:
            for part in parts:
                part.close()
    except Exception as exc:  # the engines raise OSError, RuntimeError, KeyError... for bad bytes
        raise DownloadError(f"{label} is a truncated or corrupt {kind} file "
                            f"({type(exc).__name__}: {exc}); accepted: complete {ACCEPTED}") from exc


def container(data: bytes) -> str | None:
    """The container format named by the first bytes, or None when unknown."""
    return next((name for magic, name in MAGIC.items() if data.startswith(magic)), None)


def _open_any(data: bytes, label: str) -> list[xr.Dataset]:
    kind = container(data)
    if kind is None:
        found = "it is empty" if not data else f"it starts with {data[:8]!r}"
        raise DownloadError(f"{label} is not an ERA5 file: {found}; accepted: {ACCEPTED}")
    if kind == "ZIP":
        return _open_zip(data, label)
    try:
        return _open_grib(data) if kind == "GRIB" else [_open_netcdf(data)]
    except Exception as exc:  # the engines raise OSError, RuntimeError, KeyError... for bad bytes
        raise DownloadError(f"{label} is a truncated or corrupt {kind} file ({len(data)} bytes: "
                            f"{type(exc).__name__}: {exc}); accepted: complete {ACCEPTED}") from exc


def _open_zip(data: bytes, label: str) -> list[xr.Dataset]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = {info.filename: archive.read(info) for info in archive.infolist()
                       if not info.is_dir()}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise DownloadError(f"{label} is a truncated or corrupt ZIP ({len(data)} bytes: {exc}); "
                            f"accepted: {ACCEPTED}") from exc
    for name, member in members.items():
        if container(member) in (None, "ZIP"):
            found = "empty" if not member else f"starting with {member[:8]!r}"
            raise DownloadError(f"{label} is a ZIP whose member {name!r} is not NetCDF or GRIB "
                                f"({found}); members: {sorted(members)}; accepted: {ACCEPTED}")
    if not members:
        raise DownloadError(f"{label} is an empty ZIP; accepted: {ACCEPTED}")
    return [part for name, member in members.items()
            for part in _open_any(member, f"ZIP member {name!r} of {label}")]


def _open_netcdf(data: bytes) -> xr.Dataset:
    with xr.open_dataset(data, engine="netcdf4") as ds:
        return ds.load()


def _open_grib(data: bytes) -> list[xr.Dataset]:
    """GRIB through cfgrib, which needs a file: a private temporary directory, removed after."""
    import cfgrib  # imported here: eccodes is slow to load and rarely needed

    with tempfile.TemporaryDirectory(prefix="picsel-grib-") as tmp:
        path = Path(tmp) / "data.grib"
        path.write_bytes(data)
        parts = cfgrib.open_datasets(path, backend_kwargs={"indexpath": ""},
                                     time_dims=("valid_time",))
        if not parts:
            raise ValueError("no GRIB message cfgrib can read")
        for part in parts:
            part.load().close()  # the values stay in memory; the file can go
        return parts


def _normalise(ds: xr.Dataset) -> xr.Dataset:
    """valid_time dim, one expver, no scalar leftovers, latitude N→S, longitude -180..180 sorted."""
    if "valid_time" not in ds.dims and "time" in ds.dims:
        ds = ds.drop_vars("valid_time", errors="ignore").rename(time="valid_time")
    if "expver" in ds.dims:  # old CDS: ERA5 and ERA5T side by side; each hour is in one of them
        ds = reduce(lambda a, b: a.combine_first(b),
                    (ds.isel(expver=i, drop=True) for i in range(ds.sizes["expver"])))
    if "valid_time" in ds.coords and ds["valid_time"].ndim == 0:  # one time step, squeezed
        ds = ds.expand_dims("valid_time")
    ds = ds.drop_vars([name for name, coord in ds.coords.items() if coord.ndim == 0])
    missing = {"valid_time", "latitude", "longitude"} - set(ds.dims)
    if missing:
        raise DownloadError(f"download lacks the dimension(s) {sorted(missing)}: found "
                            f"{dict(ds.sizes)}; accepted: ERA5 fields on a regular lat/lon grid")
    lat, lon = ds["latitude"], ds["longitude"]
    ds = ds.assign_coords(latitude=lat.copy(data=lat.values.astype("float64").round(6)),
                          longitude=lon.copy(data=((lon.values + 180.0) % 360 - 180).round(6)))
    if not ds.indexes["longitude"].is_monotonic_increasing:
        ds = ds.sortby("longitude")
    if not ds.indexes["latitude"].is_monotonic_decreasing:
        ds = ds.sortby("latitude", ascending=False)
    if not ds.indexes["valid_time"].is_monotonic_increasing:
        ds = ds.sortby("valid_time")
    dims = ("valid_time", "latitude", "longitude")
    repeated = [dim for dim in dims if ds.indexes[dim].has_duplicates]
    return ds.transpose(*dims, ...).drop_duplicates(repeated) if repeated else ds.transpose(*dims, ...)

